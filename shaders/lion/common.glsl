// LION bidirectional linear attention: the interface shared by the kernels of host/lion.c.
// Spec constants, push constants and bindings must match host/lion.c.
//
// Two kinds of kernels:
// - the heavy ones (attn, chunk_state, chunk_output, rnn_scan) are built once, for fp32 rows of
//   4-aligned length (DTYPE 0, VEC 1): the host hands them the caller's tensors when those are
//   f32 and 4-aligned, or packed f32 copies made by pack.comp (o then goes through unpack.comp).
//   One build per kernel keeps the pipeline count (and the JIT time of CPU drivers) small.
// - the small ones (pack, unpack, rnn_combine) are built per storage dtype and take VEC 0 for
//   rows that cannot be read as 4-element vectors.
//
// Heavy kernels work on 64-wide tiles; each invocation ("lane") owns an RB x CB register block
// of the tile it computes and reads its operands straight from memory with 4-element vector
// loads, so that one load feeds many multiply-adds; only what other lanes consume (score
// blocks, partial sums) goes through shared memory. On a CPU implementation (lavapipe) a memory
// access costs an order of magnitude more than a multiply-add whatever the memory, so the block
// is large (16 x 16); on GPUs the host picks 8 x 8. Loops that index register blocks are
// unrolled; per-row epilogues (masks, stores) run as rolled loops that rotate the block's rows
// through row 0, which keeps the unrolled code (and the JIT time) small.
//
// Log decays: a_t = g[t] (LION-S) + g_gamma[h] (LION-D), either optional. Every exponent a kernel
// evaluates is a sum of a_t's (<= 0) or a difference of two cumulative sums where the later one
// is subtracted from the earlier one, so it is <= 0 as well: no overflow for any decay strength.
#ifndef VKLA_LION_COMMON_GLSL
#define VKLA_LION_COMMON_GLSL

#extension GL_EXT_control_flow_attributes : require
#include "../common/dtype.glsl"

// (ELEM4 and LOADE4 come from dtype.glsl; stores have their own STORE4)
#if DTYPE == 0
#define STORE4(x) (x)
#elif DTYPE == 1
#define STORE4(x) f16vec4(x)
#else
// stores go through a uvec2 view of o (a 16-bit vector value would need the Int16 capability)
uvec2 vkla_bf16x4(vec4 x)
{
    return uvec2(vkla_bf16_bits(x.x) | (vkla_bf16_bits(x.y) << 16),
                 vkla_bf16_bits(x.z) | (vkla_bf16_bits(x.w) << 16));
}
#endif

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint RB = 16;  // rows of a lane's register block
layout(constant_id = 2) const uint CB = 16;  // columns of a lane's register block
layout(constant_id = 3) const uint VEC = 1;  // 1: 4-element vector access of q/k/v/o rows

const uint TW = 64u;  // tile width over K and V, and token tile of every form

layout(push_constant) uniform Params {
    uint T;                          // tokens per batch row of the tensors
    uint h_begin, s_begin, c_begin;  // this dispatch's first head, sequence, 64-token tile
    uint q_base, k_base, v_base, o_base;
    uint q_sb, q_st, q_sh;
    uint k_sb, k_st, k_sh;
    uint v_sb, v_st, v_sh;
    uint o_sb, o_st, o_sh;
    uint g_base, gamma_base, st_base, z_base;
    float scale;
    float eps;
    uint ntiles;                     // 64-token tiles of the whole call
    uint K, V, H;
    uint cfg;                        // flags (bits 0-7), chunk size (bits 8-15)
    uint xs;                         // row length of the scratch (see each kernel)
} pc;

const uint F_G = 1u, F_GAMMA = 2u, F_NORM = 4u, F_VARLEN = 8u;
// backward pass: F_TRANS runs the chunk kernels with the transposed mask M^T (see
// chunk_state.comp); F_ONES makes pack.comp append a column of ones (the normalizer column)
// F_STATE_T makes chunk_output read its states transposed; F_TERMS makes it also write the
// inter-chunk terms of the log-decay gradient (see chunk_output.comp)
const uint F_TRANS = 16u, F_ONES = 32u, F_STATE_T = 64u, F_TERMS = 128u;
#define HAS_G ((pc.cfg & F_G) != 0u)
#define HAS_GAMMA ((pc.cfg & F_GAMMA) != 0u)
#define NORMALIZE ((pc.cfg & F_NORM) != 0u)
#define VARLEN ((pc.cfg & F_VARLEN) != 0u)
#define TRANS ((pc.cfg & F_TRANS) != 0u)
#define STATE_T ((pc.cfg & F_STATE_T) != 0u)
#define TERMS ((pc.cfg & F_TERMS) != 0u)
#define CHUNK ((pc.cfg >> 8u) & 255u)

layout(std430, binding = 0) readonly buffer QB { ELEM q_buf[]; };
layout(std430, binding = 0) readonly buffer QB4 { ELEM4 q4_buf[]; };
layout(std430, binding = 1) readonly buffer KB { ELEM k_buf[]; };
layout(std430, binding = 1) readonly buffer KB4 { ELEM4 k4_buf[]; };
layout(std430, binding = 2) readonly buffer VB { ELEM v_buf[]; };
layout(std430, binding = 2) readonly buffer VB4 { ELEM4 v4_buf[]; };
layout(std430, binding = 3) writeonly buffer OB { ELEM o_buf[]; };
#if DTYPE == 2
layout(std430, binding = 3) writeonly buffer OB4 { uvec2 o4_buf[]; };
#define STORE4(x) vkla_bf16x4(x)
#else
layout(std430, binding = 3) writeonly buffer OB4 { ELEM4 o4_buf[]; };
#endif
layout(std430, binding = 4) readonly buffer GB { float g_buf[]; };
layout(std430, binding = 5) readonly buffer GGB { float gamma_buf[]; };
layout(std430, binding = 6) readonly buffer SEQB { uvec4 seqtab[]; };
layout(std430, binding = 7) readonly buffer CHB { uvec2 chunktab[]; };
layout(std430, binding = 8) buffer STB { float st_buf[]; };     // fp32 scratch, 16-byte aligned
layout(std430, binding = 8) buffer STB4 { vec4 st4_buf[]; };
layout(std430, binding = 9) buffer ZB { float z_buf[]; };
layout(std430, binding = 9) buffer ZB4 { vec4 z4_buf[]; };

#include "../common/seqs.glsl"

uint align4(uint x) { return (x + 3u) & ~3u; }

// 1 - e^a for a <= 0, to full relative precision also near a = 0. Scans decay their state as
// S - (1 - e^a) S rather than e^a S: for a decay close to 1 (RetNet-style g_gamma ~ -1e-4) the
// fp32 rounding of e^a itself would otherwise be the same relative error at every step and add
// up linearly over the sequence.
float one_minus_exp(float a)
{
    const float s = a * (1.0 + a * (1.0 / 2.0 + a * (1.0 / 6.0 + a * (1.0 / 24.0 + a * (1.0 / 120.0 +
                    a * (1.0 / 720.0 + a * (1.0 / 5040.0 + a * (1.0 / 40320.0))))))));
    return a > -0.25 ? -s : 1.0 - exp(a);
}

// Element offsets of a token row (batch row b, token t, head h).
uint q_row(uint b, uint t, uint h) { return pc.q_base + b * pc.q_sb + t * pc.q_st + h * pc.q_sh; }
uint k_row(uint b, uint t, uint h) { return pc.k_base + b * pc.k_sb + t * pc.k_st + h * pc.k_sh; }
uint v_row(uint b, uint t, uint h) { return pc.v_base + b * pc.v_sb + t * pc.v_st + h * pc.v_sh; }
uint o_row(uint b, uint t, uint h) { return pc.o_base + b * pc.o_sb + t * pc.o_st + h * pc.o_sh; }

// Elements i..i+3 of a row (i a multiple of 4), zero past the row length. With VEC, rows hold
// align4(length) elements (packed rows are zero-padded).
vec4 ld_q4(uint row, uint i)
{
    vec4 r = vec4(0.0);
    if (VEC == 1u) {
        // no branch: read a valid vector (the last one of the row) and select
        const uint n4 = align4(pc.K);
        const vec4 x = LOADE4(q4_buf[(row + min(i, n4 - 4u)) >> 2u]);
        r = i < n4 ? x : vec4(0.0);
    } else {
        [[unroll]] for (uint c = 0u; c < 4u; c++)
            if (i + c < pc.K)
                r[c] = LOADE(q_buf[row + i + c]);
    }
    return r;
}
vec4 ld_k4(uint row, uint i)
{
    vec4 r = vec4(0.0);
    if (VEC == 1u) {
        // no branch: read a valid vector (the last one of the row) and select
        const uint n4 = align4(pc.K);
        const vec4 x = LOADE4(k4_buf[(row + min(i, n4 - 4u)) >> 2u]);
        r = i < n4 ? x : vec4(0.0);
    } else {
        [[unroll]] for (uint c = 0u; c < 4u; c++)
            if (i + c < pc.K)
                r[c] = LOADE(k_buf[row + i + c]);
    }
    return r;
}
vec4 ld_v4(uint row, uint i)
{
    vec4 r = vec4(0.0);
    if (VEC == 1u) {
        // no branch: read a valid vector (the last one of the row) and select
        const uint n4 = align4(pc.V);
        const vec4 x = LOADE4(v4_buf[(row + min(i, n4 - 4u)) >> 2u]);
        r = i < n4 ? x : vec4(0.0);
    } else {
        [[unroll]] for (uint c = 0u; c < 4u; c++)
            if (i + c < pc.V)
                r[c] = LOADE(v_buf[row + i + c]);
    }
    return r;
}
void st_o4(uint row, uint i, vec4 x)
{
    if (VEC == 1u) {
        if (i < pc.V)
            o4_buf[(row + i) >> 2u] = STORE4(x);
    } else {
        [[unroll]] for (uint c = 0u; c < 4u; c++)
            if (i + c < pc.V)
                o_buf[row + i + c] = STOREE(x[c]);
    }
}

// Log decay a_t of token t (batch row b) and head h: g + g_gamma, 0 without gates.
float log_decay(uint b, uint t, uint h)
{
    float d = 0.0;
    if (HAS_G)
        d += g_buf[pc.g_base + (b * pc.T + t) * pc.H + h];
    if (HAS_GAMMA)
        d += gamma_buf[pc.gamma_base + h];
    return d;
}


// Register blocks: row r of a block as 4-element pieces.
#define ROW4(acc, r, x4) vec4(acc[r][4u * (x4)], acc[r][4u * (x4) + 1u], acc[r][4u * (x4) + 2u], \
                              acc[r][4u * (x4) + 3u])
// Moves rows 1.. of a block up by one (the rolled epilogues consume row 0 each step).
#define ROTATE_ROWS(acc, NCOLS)                                                                 \
    [[unroll]] for (uint rr_ = 0u; rr_ + 1u < RB; rr_++)                                        \
        [[unroll]] for (uint xx_ = 0u; xx_ < (NCOLS); xx_++)                                    \
            acc[rr_][xx_] = acc[rr_ + 1u][xx_];

// Cyclic version: after RB steps the block is back in its original order.
#define ROTATE_ROWS_CYCLIC(acc, NCOLS)                                                          \
    [[unroll]] for (uint xx_ = 0u; xx_ < (NCOLS); xx_++) {                                      \
        const float t_ = acc[0][xx_];                                                           \
        [[unroll]] for (uint rr_ = 0u; rr_ + 1u < RB; rr_++)                                    \
            acc[rr_][xx_] = acc[rr_ + 1u][xx_];                                                 \
        acc[RB - 1u][xx_] = t_;                                                                 \
    }

// acc[r][x] = q_(qrow r) . k_(krow x) over the K channels (register-blocked dot products).
void qk_block(const uint qr[RB], const uint kr[CB], out float acc[RB][CB])
{
    [[unroll]] for (uint r = 0u; r < RB; r++)
        [[unroll]] for (uint x = 0u; x < CB; x++)
            acc[r][x] = 0.0;
    [[dont_unroll]] for (uint k = 0u; k < pc.K; k += 4u) {
        vec4 qa[RB], ka[CB];
        [[unroll]] for (uint r = 0u; r < RB; r++)
            qa[r] = ld_q4(qr[r], k);
        [[unroll]] for (uint x = 0u; x < CB; x++)
            ka[x] = ld_k4(kr[x], k);
        [[unroll]] for (uint r = 0u; r < RB; r++)
            [[unroll]] for (uint x = 0u; x < CB; x++)
                acc[r][x] += dot(qa[r], ka[x]);
    }
}

// acc[r][.] += sum_j A[i0 + r][j] v_j[col0 ..] over columns [j_lo, j_hi) of a TW x TW score
// block in shared memory (vec4 rows), reading the value rows of tokens vb + j (clamped below
// vb + vlast); den[r] += sum_j A[i0 + r][j].
#define AV_BLOCK(sA, i0, j_lo, j_hi, vb, vlast, h, b, col0, acc, den)                           \
    [[dont_unroll]] for (uint j_ = (j_lo); j_ < (j_hi); j_ += 4u) {                             \
        vec4 vv_[4][CB / 4u];                                                                   \
        [[unroll]] for (uint jj_ = 0u; jj_ < 4u; jj_++) {                                       \
            const uint vr_ = v_row(b, (vb) + min(j_ + jj_, (vlast)), h);                        \
            [[unroll]] for (uint x4_ = 0u; x4_ < CB / 4u; x4_++)                                \
                vv_[jj_][x4_] = ld_v4(vr_, (col0) + 4u * x4_);                                  \
        }                                                                                       \
        [[unroll]] for (uint r_ = 0u; r_ < RB; r_++) {                                          \
            const vec4 a_ = sA[(((i0) + r_) * TW + j_) / 4u];                                   \
            den[r_] += a_.x + a_.y + a_.z + a_.w;                                               \
            [[unroll]] for (uint jj_ = 0u; jj_ < 4u; jj_++)                                     \
                [[unroll]] for (uint x4_ = 0u; x4_ < CB / 4u; x4_++) {                          \
                    const vec4 u_ = a_[jj_] * vv_[jj_][x4_];                                    \
                    acc[r_][4u * x4_] += u_.x;                                                  \
                    acc[r_][4u * x4_ + 1u] += u_.y;                                             \
                    acc[r_][4u * x4_ + 2u] += u_.z;                                             \
                    acc[r_][4u * x4_ + 3u] += u_.w;                                             \
                }                                                                               \
        }                                                                                       \
    }

// Stores the rows i0.. (those < L) of an output block, o = scale * acc [/ (scale*den + eps)],
// into tokens ob + i; consumes (rotates) acc and den.
#define STORE_BLOCK(i0, L, ob, h, b, col0, acc, den)                                            \
    [[dont_unroll]] for (uint r_ = 0u; r_ < RB; r_++) {                                         \
        const float mul_ = NORMALIZE ? pc.scale / (pc.scale * den[0] + pc.eps) : pc.scale;      \
        if ((i0) + r_ < (L)) {                                                                  \
            const uint orow_ = o_row(b, (ob) + (i0) + r_, h);                                   \
            [[unroll]] for (uint x4_ = 0u; x4_ < CB / 4u; x4_++)                                \
                st_o4(orow_, (col0) + 4u * x4_, mul_ * ROW4(acc, 0u, x4_));                     \
        }                                                                                       \
        ROTATE_ROWS(acc, CB)                                                                    \
        [[unroll]] for (uint rr_ = 0u; rr_ + 1u < RB; rr_++)                                    \
            den[rr_] = den[rr_ + 1u];                                                           \
    }

#endif
