#version 450
// Causal linear attention, backward, step 6 (parallel over all chunks and value tiles): dv of
// KT value columns of one chunk,
//   dv_t = D^T (k_t e^(G_C - G_t)) + scale * sum_{s>=t} A[s][t] do'_s
// with D the gradient of the state leaving the chunk and A the scores of step 1.
// Workgroup of C threads = (C/4) x 4; thread (ti, tj) owns tokens 4ti..4ti+3 x columns
// 4tj..4tj+3; each step of both sums is one vec4 read along tokens and one along columns.
// Grid: x = value tiles, y = heads, z = chunks. P0 = C.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "bwd_common.glsl"

const uint NB = C / 4u;
const uint NT = NB * 4u;

shared vec4 s_a4[C * C / 4u];      // A [s][t]
shared vec4 s_do4[C * KT / 4u];    // do' [s][j]
shared vec4 s_kd4[KT * C / 4u];    // [i][t]: k_t[i] e^(G_C[i] - G_t[i])
shared vec4 s_dd4[KT * KT / 4u];   // D [i][j]

void main()
{
    load_strides();
    const uint lid = gl_LocalInvocationID.x;
    const uint ti = lid / 4u, tj = lid % 4u;
    const uint j0 = gl_WorkGroupID.x * KT;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    const uint c = pc.c_begin + gl_WorkGroupID.z;
    uint s, b, tb, L, local0, len;
    chunk_coords(c, s, b, tb, L, local0, len);
    chunk_scalar_decay(lid, NT, b, tb, h, L);
    const uint db = chunk_row(pc.r_dst, h, c, K * VP);

    vec4 DV[4], AC[4];   // [y][a]: token 4ti+a, column 4tj+y
    [[unroll]] for (uint y = 0; y < 4u; y++) { DV[y] = vec4(0.0); AC[y] = vec4(0.0); }
    for (uint i0 = 0; i0 < K; i0 += KT) {
        chunk_channel_decay(lid, b, tb, h, L, i0);
        for (uint e = lid; e < KT * C; e += NT) {
            const uint ii = e / C, t = e % C;
            s_kd4[e >> 2u][e & 3u] = (t < L && i0 + ii < K)
                ? load_k(b, tb + t, h, i0 + ii) * exp(s_gc[ii * C + L - 1u] - s_gc[ii * C + t]) : 0.0;
        }
        for (uint e = lid; e < KT * KT; e += NT) {
            const uint ii = e / KT, jj = e % KT;
            s_dd4[e >> 2u][e & 3u] = (i0 + ii < K && j0 + jj < V) ? scr[db + (i0 + ii) * VP + j0 + jj] : 0.0;
        }
        barrier();
        for (uint ii = 0; ii < KT; ii++) {
            const vec4 k4 = s_kd4[(ii * C) / 4u + ti];
            const vec4 d4 = s_dd4[(ii * KT) / 4u + tj];
            [[unroll]] for (uint y = 0; y < 4u; y++)
                DV[y] += k4 * d4[y];
        }
    }

    barrier();
    const uint ab = chunk_row(pc.r_amat, h, c, C * C);
    for (uint e = lid; e < C * C; e += NT)
        s_a4[e >> 2u][e & 3u] = scr[ab + e];
    for (uint e = lid; e < C * KT; e += NT) {
        const uint t = e / KT, jj = e % KT;
        s_do4[e >> 2u][e & 3u] = (t < L && j0 + jj < V) ? load_dop(b, tb + t, h, j0 + jj, c, t) : 0.0;
    }
    barrier();
    for (uint sc = 4u * ti; sc < L; sc++) {
        const vec4 a4 = s_a4[(sc * C) / 4u + ti];
        const vec4 d4 = s_do4[(sc * KT) / 4u + tj];
        [[unroll]] for (uint y = 0; y < 4u; y++)
            AC[y] += a4 * d4[y];
    }
    [[unroll]] for (uint y = 0; y < 4u; y++) {
        const uint j = j0 + 4u * tj + y;
        const vec4 dv = DV[y] + pc.scale * AC[y];
        [[unroll]] for (uint a = 0; a < 4u; a++)
            if (4u * ti + a < L && j < V)
                store_dv(b, tb + 4u * ti + a, h, j, dv[a]);
    }
}
