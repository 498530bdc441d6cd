#version 450
// Causal linear attention, chunk form, step 1 (parallel over all chunks):
// each chunk's own state contribution  dS = (K * e^(G_last - G))^T V  (V with the ones column
// when normalizing) and its total log decay G_last (per channel with gk).
//
// Workgroup of 128 threads = 16 x 8 computes a 64 x 64 tile of dS (key rows x value columns);
// thread (ti, tj) owns rows 4ti..4ti+3 and columns 8tj..8tj+7: a register block fed by one
// vec4 read of decayed keys and two of values per token.
// Grid: x = key tiles * column tiles, y = heads, z = chunks. P0 = C (chunk size).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

const uint C = P0;
const uint TR = 64u;   // rows (keys) per tile
const uint TC = 64u;   // columns (values) per tile

shared float s_kd[C * TR];    // cumulative gk, then k_j[i] * e^(G_last[i] - G_j[i])
shared float s_gs[C];         // in-chunk cumulative scalar log decay
shared float s_gl[TR];        // cumulative gk at the chunk's last token
shared vec4 s_v4[(C / 2u) * TC / 4u]; // half a chunk of values

void main()
{
    const uint lid = gl_LocalInvocationID.x;
    const uint ti = lid / 8u, tj = lid % 8u;
    const uint ntc = (VP + TC - 1u) / TC;
    const uint kt = gl_WorkGroupID.x / ntc, ct = gl_WorkGroupID.x % ntc;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    const uint c = pc.c_begin + gl_WorkGroupID.z;
    uint s, local0, b, t0, len;
    chunk_info(c, C, s, local0);
    seq_info(s, b, t0, len);
    const uint L = min(C, len - local0);
    const uint tb = t0 + local0;

    // cumulative log decays inside the chunk
    for (uint j = lid; j < C; j += 128u)
        s_gs[j] = j < L ? log_decay_scalar(b, tb + j, h) : 0.0;
    barrier();
    if (lid == 0u)
        for (uint j = 1u; j < L; j++)
            s_gs[j] += s_gs[j - 1u];
    if (HAS_GK && lid < TR) {
        uint i = kt * TR + lid;
        float acc = 0.0;
        for (uint j = 0; j < C; j++) {
            if (j < L && i < K)
                acc += log_decay_channel(b, tb + j, h, i);
            s_kd[j * TR + lid] = acc;
        }
        s_gl[lid] = acc;
    }
    barrier();
    // keys decayed to the chunk end (in place: each element is read and written by one thread)
    for (uint e = lid; e < C * TR; e += 128u) {
        uint j = e / TR, x = e % TR, i = kt * TR + x;
        float kv = 0.0;
        if (j < L && i < K) {
            float gl = s_gs[L - 1u] - s_gs[j];
            if (HAS_GK)
                gl += s_gl[x] - s_kd[e];
            kv = load_k(b, tb + j, h, i) * exp(gl);
        }
        s_kd[e] = kv;
    }
    barrier();

    vec4 acc[8];   // acc[x][a]: key row 4ti+a, value column 8tj+x
    [[unroll]] for (uint x = 0; x < 8u; x++)
        acc[x] = vec4(0.0);
    for (uint v0 = 0; v0 < L; v0 += C / 2u) {
        for (uint e = lid; e < (C / 2u) * TC; e += 128u) {
            const uint t = v0 + e / TC, cc = ct * TC + e % TC;
            s_v4[e >> 2u][e & 3u] = (t < L && cc < VP) ? load_v(b, tb + t, h, cc) : 0.0;
        }
        barrier();
        const uint tn = min(C / 2u, L - v0);
        for (uint t = 0; t < tn; t++) {
            const uint kb = (v0 + t) * TR + 4u * ti;
            const vec4 kd = vec4(s_kd[kb], s_kd[kb + 1u], s_kd[kb + 2u], s_kd[kb + 3u]);
            const vec4 w0 = s_v4[(t * TC) / 4u + 2u * tj];
            const vec4 w1 = s_v4[(t * TC) / 4u + 2u * tj + 1u];
            [[unroll]] for (uint x = 0; x < 4u; x++) {
                acc[x] += kd * w0[x];
                acc[x + 4u] += kd * w1[x];
            }
        }
        barrier();
    }
    [[unroll]] for (uint a = 0; a < 4u; a++) {
        const uint i = kt * TR + 4u * ti + a;
        [[unroll]] for (uint x = 0; x < 8u; x++) {
            const uint col = ct * TC + 8u * tj + x;
            if (i < K && col < VP)
                state_buf[pc.st_base + ((h * pc.nchunks + c) * K + i) * VP + col] = acc[x][a];
        }
    }

    // total log decay of the chunk, written once per (chunk, head)
    if (ct == 0u && lid < TR) {
        uint d = kt * TR + lid;
        if (HAS_GK) {
            if (d < K)
                decay_buf[pc.dc_base + (h * pc.nchunks + c) * KD + d] =
                    s_gs[L - 1u] + s_gl[lid];
        } else if (kt == 0u && lid == 0u) {
            decay_buf[pc.dc_base + (h * pc.nchunks + c) * KD] = s_gs[L - 1u];
        }
    }
}
