#version 450
// Causal linear attention, backward, step 6 (parallel over all chunks and value tiles): dv of
// KT value columns of one chunk,
//   dv_t = D^T (k_t e^(G_C - G_t)) + scale * sum_{s>=t} A[s][t] do'_s
// with D the gradient of the state leaving the chunk and A the scores of step 1.
// Workgroup of 128 threads: thread (x, tg) owns column j0 + x (x = lid % 16) and the tokens
// tg, tg + 8, ... Grid: x = value tiles, y = heads, z = chunks. P0 = C.
#extension GL_GOOGLE_include_directive : require
#include "bwd_common.glsl"

const uint NT = 128u;
const uint R = C / 8u;
const uint XP = KT + 1u;
const uint CP = C + 1u;

shared float s_dd[KT * XP];    // D tile [i][j]
shared float s_kd[C * XP];     // [t][i]: k_t[i] e^(G_C[i] - G_t[i])
shared float s_a[C * CP];      // A[s][t]
shared float s_dop[C * XP];    // [t][j]

void main()
{
    load_strides();
    const uint lid = gl_LocalInvocationID.x;
    const uint x = lid % KT, tg = lid / KT;
    const uint j0 = gl_WorkGroupID.x * KT, j = j0 + x;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    const uint c = pc.c_begin + gl_WorkGroupID.z;
    uint s, b, tb, L, local0, len;
    chunk_coords(c, s, b, tb, L, local0, len);
    chunk_scalar_decay(lid, NT, b, tb, h, L);
    const uint db = chunk_row(pc.r_dst, h, c, K * VP);

    float dv[R];
    for (uint r = 0; r < R; r++)
        dv[r] = 0.0;
    for (uint i0 = 0; i0 < K; i0 += KT) {
        chunk_channel_decay(lid, b, tb, h, L, i0);
        for (uint e = lid; e < KT * KT; e += NT) {
            const uint ii = e / KT, jj = e % KT;
            s_dd[ii * XP + jj] = (i0 + ii < K && j0 + jj < V) ? scr[db + (i0 + ii) * VP + j0 + jj] : 0.0;
        }
        for (uint e = lid; e < C * KT; e += NT) {
            const uint t = e / KT, ii = e % KT;
            s_kd[t * XP + ii] = (t < L && i0 + ii < K)
                ? load_k(b, tb + t, h, i0 + ii) * exp(s_gc[ii * C + L - 1u] - s_gc[ii * C + t]) : 0.0;
        }
        barrier();
        for (uint ii = 0; ii < KT; ii++) {
            const float d = s_dd[ii * XP + x];
            for (uint r = 0; r < R; r++)
                dv[r] += d * s_kd[(tg + 8u * r) * XP + ii];
        }
    }

    barrier();
    const uint ab = chunk_row(pc.r_amat, h, c, C * C);
    for (uint e = lid; e < C * C; e += NT)
        s_a[(e / C) * CP + e % C] = scr[ab + e];
    for (uint e = lid; e < C * KT; e += NT) {
        const uint t = e / KT, jj = e % KT;
        s_dop[t * XP + jj] = (t < L && j0 + jj < V) ? load_dop(b, tb + t, h, j0 + jj, c, t) : 0.0;
    }
    barrier();
    for (uint r = 0; r < R; r++) {
        const uint t = tg + 8u * r;
        if (t >= L || j >= V)
            continue;
        float acc = 0.0;
        for (uint sc = t; sc < L; sc++)
            acc += s_a[sc * CP + t] * s_dop[sc * XP + x];
        store_dv(b, tb + t, h, j, dv[r] + pc.scale * acc);
    }
}
