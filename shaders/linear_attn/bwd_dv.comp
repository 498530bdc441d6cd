#version 450
// Causal linear attention, backward, step 6 (parallel over all chunks and value tiles): dv of
// VT = 64 value columns of one chunk,
//   dv_t = D^T (k_t e^(G_C - G_t)) + scale * sum_{s>=t} A[s][t] do'_s
// with D the gradient of the state leaving the chunk and A the scores of step 1.
// Workgroup of C threads = (C/4) x 4; thread (ti, tj) owns tokens 4ti..4ti+3 x columns
// 16tj..16tj+15; each step of both sums is one vec4 read along tokens and four along columns
// for 16 vec4 FMAs. One shared area holds in turn a key tile (decayed keys, D rows) and half a
// chunk of A rows and do' rows.
// Grid: x = value tiles, y = heads, z = chunks. P0 = C.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "bwd_common.glsl"

const uint NB = C / 4u;
const uint NT = NB * 4u;
const uint VT = 64u;
const uint HC = C / 2u;
// key tile: kd^T [KT][C] (k_t[i] e^(G_C[i] - G_t[i])), D [KT][VT]
const uint X_KD = 0u, X_D = KT * C / 4u, X_KEY = X_D + KT * VT / 4u;
// half chunk: A [HC][C] (rows s), do' [HC][VT]
const uint X_A = 0u, X_DO = HC * C / 4u, X_HALF = X_DO + HC * VT / 4u;
shared vec4 s_x4[X_KEY > X_HALF ? X_KEY : X_HALF];

void put(uint e, float x) { s_x4[e >> 2u][e & 3u] = x; }

void main()
{
    load_strides();
    const uint lid = gl_LocalInvocationID.x;
    const uint ti = lid / 4u, tj = lid % 4u;
    const uint j0 = gl_WorkGroupID.x * VT;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    const uint c = pc.c_begin + gl_WorkGroupID.z;
    uint s, b, tb, L, local0, len;
    chunk_coords(c, s, b, tb, L, local0, len);
    chunk_scalar_decay(lid, NT, b, tb, h, L);
    const uint db = chunk_row(pc.r_dst, h, c, K * VP);

    vec4 DV[16];   // [y][a]: token 4ti+a, column 16tj+y
    [[unroll]] for (uint y = 0; y < 16u; y++) DV[y] = vec4(0.0);
    for (uint i0 = 0; i0 < K; i0 += KT) {
        chunk_channel_decay(lid, b, tb, h, L, i0);
        for (uint e = lid; e < KT * C; e += NT) {
            const uint ii = e / C, t = e % C;
            put(X_KD * 4u + e, (t < L && i0 + ii < K)
                ? load_k(b, tb + t, h, i0 + ii) * exp(s_gc[ii * C + L - 1u] - s_gc[ii * C + t]) : 0.0);
        }
        for (uint e = lid; e < KT * VT; e += NT) {
            const uint ii = e / VT, jj = e % VT;
            put(X_D * 4u + e, (i0 + ii < K && j0 + jj < V) ? scr[db + (i0 + ii) * VP + j0 + jj] : 0.0);
        }
        barrier();
        for (uint ii = 0; ii < KT; ii++) {
            const vec4 k4 = s_x4[X_KD + (ii * C) / 4u + ti];
            [[unroll]] for (uint q = 0; q < 4u; q++) {
                const vec4 d4 = s_x4[X_D + (ii * VT) / 4u + 4u * tj + q];
                [[unroll]] for (uint y = 0; y < 4u; y++)
                    DV[4u * q + y] += k4 * d4[y];
            }
        }
    }

    vec4 AC[16];
    [[unroll]] for (uint y = 0; y < 16u; y++) AC[y] = vec4(0.0);
    const uint ab = chunk_row(pc.r_amat, h, c, C * C);
    for (uint s0 = 0; s0 < L; s0 += HC) {
        barrier();
        for (uint e = lid; e < HC * C; e += NT)
            put(X_A * 4u + e, scr[ab + s0 * C + e]);
        for (uint e = lid; e < HC * VT; e += NT) {
            const uint sc = s0 + e / VT, jj = e % VT;
            put(X_DO * 4u + e, (sc < L && j0 + jj < V) ? load_dop(b, tb + sc, h, j0 + jj, c, sc) : 0.0);
        }
        barrier();
        const uint s1 = min(s0 + HC, L);
        for (uint sc = max(s0, 4u * ti); sc < s1; sc++) {
            const vec4 a4 = s_x4[X_A + ((sc - s0) * C) / 4u + ti];
            [[unroll]] for (uint q = 0; q < 4u; q++) {
                const vec4 d4 = s_x4[X_DO + ((sc - s0) * VT) / 4u + 4u * tj + q];
                [[unroll]] for (uint y = 0; y < 4u; y++)
                    AC[4u * q + y] += a4 * d4[y];
            }
        }
    }
    [[unroll]] for (uint y = 0; y < 16u; y++) {
        const uint j = j0 + 16u * tj + y;
        const vec4 dv = DV[y] + pc.scale * AC[y];
        [[unroll]] for (uint a = 0; a < 4u; a++)
            if (4u * ti + a < L && j < V)
                store_dv(b, tb + 4u * ti + a, h, j, dv[a]);
    }
}
