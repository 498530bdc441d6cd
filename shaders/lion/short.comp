#version 450
// LION-LIT (no decay) for short sequences and small heads: one lane per (sequence, head), the
// K x V' state of the sequence in registers. Without a mask every query sees the same state,
//     S' = sum_j k_j v'_j^T   (v' = [v, 1] under normalize: the last column is z = sum_j k_j),
// so the forward is o_i = scale q_i^T S [/ (scale q_i . z + eps)], and the gradients (with
// do'_i = do_i, or under normalize [do_i / d_i, -(do_i . o_i) / d_i], d_i = scale q_i . z + eps):
//     dq_i = scale S' do'_i,   dk_j = scale U' v'_j,   dv_j = scale U^T k_j,   U' = sum_i q_i do'_i^T
// (U the first V columns of U'). Cost O(T K V) per sequence and head, no padding, no shared
// memory. Three modes (spec constant MODE): 0 forward (o), 1 dq, 2 dk and/or dv. K and V are
// spec constants: every loop over them is unrolled and the state stays in registers.
// Any storage dtype (DTYPE) and row strides; fp32 arithmetic. Host side: host/lion_short.c.

#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "../common/dtype.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint KS = 1;     // K
layout(constant_id = 2) const uint VS = 1;     // V
layout(constant_id = 3) const uint MODE = 0u;  // 0 forward, 1 dq, 2 dk / dv
layout(constant_id = 4) const uint FLAGS = 0u; // 1 normalize, 2 varlen, 4 dk wanted, 8 dv wanted

const uint NORM = FLAGS & 1u;                  // 1 under normalize
const uint VP = VS + NORM;                     // columns of the state: v' = [v, 1]
#define NORMALIZE (NORM != 0u)
#define VARLEN ((FLAGS & 2u) != 0u)
#define WANT_DK ((FLAGS & 4u) != 0u)
#define WANT_DV ((FLAGS & 8u) != 0u)

// Tensor slots: 0 q, 1 k, 2 v, 3 dout (read); 4, 5 outputs (o; dq; dk, dv).
layout(push_constant) uniform Params {
    uint T;                           // tokens per batch row
    uint h_begin, s_begin, s_end, h_end; // this dispatch's sequences and heads (ends exclusive)
    uint base[6];                     // element offset of each slot's tensor in its binding
    uint str[18];                     // per slot: batch, token and head strides (elements)
    float scale;
    float eps;
} pc;

layout(std430, binding = 0) readonly buffer QB { ELEM q_buf[]; };
layout(std430, binding = 1) readonly buffer KB { ELEM k_buf[]; };
layout(std430, binding = 2) readonly buffer VB { ELEM v_buf[]; };
layout(std430, binding = 3) readonly buffer DB { ELEM d_buf[]; };
layout(std430, binding = 4) writeonly buffer O1B { ELEM o1_buf[]; };
layout(std430, binding = 5) writeonly buffer O2B { ELEM o2_buf[]; };
layout(std430, binding = 6) readonly buffer SEQB { uvec4 seqtab[]; };
layout(std430, binding = 7) readonly buffer CHB { uvec2 chunktab[]; };

#include "../common/seqs.glsl"

// Per lane: the state S' (row k, column c at k * VP + c), U', and the rows of one token.
float S[KS * VP];
float U[KS * VP];
float qr[KS], kr[KS], vr[VS], dr[VS], dp[VP];

uint row(uint slot, uint b, uint t, uint h)
{
    return pc.base[slot] + b * pc.str[3u * slot] + t * pc.str[3u * slot + 1u] +
           h * pc.str[3u * slot + 2u];
}

#define LOAD_ROW(buf, slot, n, x, b, t, h)                                                       \
    {                                                                                           \
        const uint r_ = row(slot, b, t, h);                                                     \
        [[unroll]] for (uint c_ = 0u; c_ < (n); c_++)                                           \
            x[c_] = LOADE(buf[r_ + c_]);                                                        \
    }

// S' = sum_j k_j v'_j^T over the tokens [t0, t0 + len).
void state(uint b, uint t0, uint len, uint h)
{
    [[unroll]] for (uint e = 0u; e < KS * VP; e++)
        S[e] = 0.0;
    [[dont_unroll]] for (uint j = 0u; j < len; j++) {
        LOAD_ROW(k_buf, 1u, KS, kr, b, t0 + j, h)
        LOAD_ROW(v_buf, 2u, VS, vr, b, t0 + j, h)
        [[unroll]] for (uint k = 0u; k < KS; k++) {
            [[unroll]] for (uint c = 0u; c < VS; c++)
                S[k * VP + c] += kr[k] * vr[c];
            if (NORMALIZE)
                S[k * VP + VS] += kr[k];
        }
    }
}

// dp = do'_i of token t (the row of dout in dr); under normalize from o_i and d_i, which need
// q_i (in qr) and the state S'.
void dout_prime(uint b, uint t, uint h)
{
    LOAD_ROW(d_buf, 3u, VS, dr, b, t, h)
    if (NORMALIZE) {
        float n[VP];
        [[unroll]] for (uint c = 0u; c < VP; c++)
            n[c] = 0.0;
        [[unroll]] for (uint k = 0u; k < KS; k++)
            [[unroll]] for (uint c = 0u; c < VP; c++)
                n[c] += qr[k] * S[k * VP + c];
        const float d = pc.scale * n[VS] + pc.eps;
        float dot_ = 0.0;
        [[unroll]] for (uint c = 0u; c < VS; c++)
            dot_ += dr[c] * n[c];
        const float inv = 1.0 / d;
        [[unroll]] for (uint c = 0u; c < VS; c++)
            dp[c] = dr[c] * inv;
        dp[VP - 1u] = -(pc.scale * dot_ * inv) * inv;
    } else {
        [[unroll]] for (uint c = 0u; c < VS; c++)
            dp[c] = dr[c];
    }
}

void forward(uint b, uint t0, uint len, uint h)
{
    state(b, t0, len, h);
    [[dont_unroll]] for (uint i = 0u; i < len; i++) {
        LOAD_ROW(q_buf, 0u, KS, qr, b, t0 + i, h)
        float o[VP];
        [[unroll]] for (uint c = 0u; c < VP; c++)
            o[c] = 0.0;
        [[unroll]] for (uint k = 0u; k < KS; k++)
            [[unroll]] for (uint c = 0u; c < VP; c++)
                o[c] += qr[k] * S[k * VP + c];
        const float mul = NORMALIZE ? pc.scale / (pc.scale * o[VP - 1u] + pc.eps) : pc.scale;
        const uint r = row(4u, b, t0 + i, h);
        [[unroll]] for (uint c = 0u; c < VS; c++)
            o1_buf[r + c] = STOREE(mul * o[c]);
    }
}

void grad_q(uint b, uint t0, uint len, uint h)
{
    state(b, t0, len, h);
    [[dont_unroll]] for (uint i = 0u; i < len; i++) {
        if (NORMALIZE)
            LOAD_ROW(q_buf, 0u, KS, qr, b, t0 + i, h)
        dout_prime(b, t0 + i, h);
        const uint r = row(4u, b, t0 + i, h);
        [[unroll]] for (uint k = 0u; k < KS; k++) {
            float x = 0.0;
            [[unroll]] for (uint c = 0u; c < VP; c++)
                x += S[k * VP + c] * dp[c];
            o1_buf[r + k] = STOREE(pc.scale * x);
        }
    }
}

void grad_kv(uint b, uint t0, uint len, uint h)
{
    if (NORMALIZE)
        state(b, t0, len, h);
    [[unroll]] for (uint e = 0u; e < KS * VP; e++)
        U[e] = 0.0;
    [[dont_unroll]] for (uint i = 0u; i < len; i++) {
        LOAD_ROW(q_buf, 0u, KS, qr, b, t0 + i, h)
        dout_prime(b, t0 + i, h);
        [[unroll]] for (uint k = 0u; k < KS; k++)
            [[unroll]] for (uint c = 0u; c < VP; c++)
                U[k * VP + c] += qr[k] * dp[c];
    }
    [[dont_unroll]] for (uint j = 0u; j < len; j++) {
        if (WANT_DK) {
            LOAD_ROW(v_buf, 2u, VS, vr, b, t0 + j, h)
            const uint r = row(4u, b, t0 + j, h);
            [[unroll]] for (uint k = 0u; k < KS; k++) {
                float x = NORMALIZE ? U[k * VP + VP - 1u] : 0.0;
                [[unroll]] for (uint c = 0u; c < VS; c++)
                    x += U[k * VP + c] * vr[c];
                o1_buf[r + k] = STOREE(pc.scale * x);
            }
        }
        if (WANT_DV) {
            LOAD_ROW(k_buf, 1u, KS, kr, b, t0 + j, h)
            float x[VS];
            [[unroll]] for (uint c = 0u; c < VS; c++)
                x[c] = 0.0;
            [[unroll]] for (uint k = 0u; k < KS; k++)
                [[unroll]] for (uint c = 0u; c < VS; c++)
                    x[c] += U[k * VP + c] * kr[k];
            const uint r = row(5u, b, t0 + j, h);
            [[unroll]] for (uint c = 0u; c < VS; c++)
                o2_buf[r + c] = STOREE(pc.scale * x[c]);
        }
    }
}

void main()
{
    // heads fastest: neighbouring lanes read neighbouring rows
    const uint nh = pc.h_end - pc.h_begin;
    const uint s = pc.s_begin + gl_GlobalInvocationID.x / nh;
    if (s >= pc.s_end)
        return;
    const uint h = pc.h_begin + gl_GlobalInvocationID.x % nh;
    uint b, t0, len;
    seq_info(s, b, t0, len);
    if (MODE == 0u)
        forward(b, t0, len, h);
    else if (MODE == 1u)
        grad_q(b, t0, len, h);
    else
        grad_kv(b, t0, len, h);
}
