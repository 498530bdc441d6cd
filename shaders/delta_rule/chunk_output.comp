#version 450
// Delta rule, chunk form, step 3 (parallel over all chunks): the output
//   O = scale * ( (Q * e^G / |q|) S + ((Q K^T) / (|q| |k|) . D) V' ),  D_ij = e^(G_i - G_j), j <= i
// with S the state entering the chunk and V' from step 2. Every exponent is <= 0.
// Workgroup: 8 x 8 threads; thread (ti, tj) owns chunk rows ti*RM .. +RM-1 (RM = C/8), score
// columns tj*RM .. and the XU vec4 value columns XU tj .. of a tile of 32 XU values. Tiles are
// row-major vec4 arrays and products are blocked 4 deep (each vec4 load feeds 8 to 32
// multiply-adds). Each workgroup forms the whole score block, so tiles of 128 values (XU = 4)
// halve that work when V > 64.
// Grid: x = value tiles, y = value heads, z = chunks. P0 = C, P1 = XU / 2 (1 or 2).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

const uint C = P0;
const uint RM = C / 8u;   // rows (and score columns) per thread
const uint C4 = C / 4u;
const uint KT4 = 4u;      // key columns per staged tile, in vec4s
const uint XU = 2u * P1;  // vec4 value columns per thread
const uint VT4 = 8u * XU; // value tile: 32 XU columns
const uint XT = 16u;      // rows of S or V' per staged tile

// phase A: q and k tiles [C][KT4], a state tile [XT][VT4]
// phase B: the masked scores [C][C4] and a V' tile [XT][VT4]
const uint OFF_Q = 0u, OFF_K = C * KT4, OFF_S = 2u * C * KT4;
const uint SIZE_A = OFF_S + XT * VT4;
const uint OFF_A = 0u, OFF_V = C * C4;
const uint SIZE_B = OFF_V + XT * VT4;
shared vec4 smem[SIZE_A > SIZE_B ? SIZE_A : SIZE_B];
shared float s_g[C];
shared float s_ik[C];
shared float s_iq[C];

void main()
{
    const uint lid = gl_LocalInvocationID.x;
    const uint ti = lid / 8u, tj = lid % 8u;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    const uint c = pc.c_begin + gl_WorkGroupID.z;
    const uint hq = h / pc.group;
    const uint v40 = gl_WorkGroupID.x * VT4;
    uint s, local0, b, t0, len;
    chunk_info(c, C, s, local0);
    seq_info(s, b, t0, len);
    const uint L = min(C, len - local0);
    const uint tb = t0 + local0;
    const uint rec = work_rec(h, c);
    const uint st = state_at(h, c);
    const uint i0 = ti * RM, j0 = tj * RM;
    const bool low = tj <= ti; // score micro-tile touches the lower triangle

    for (uint j = lid; j < C; j += 64u) {
        const vec4 inf = work_buf[work_info(rec) + j];
        s_g[j] = inf.x;
        s_ik[j] = inf.y;
        s_iq[j] = inf.z;
    }

    vec4 O[RM][XU];
    float A[RM][RM];
    for (uint a = 0; a < RM; a++) {
        for (uint u = 0; u < XU; u++)
            O[a][u] = vec4(0.0);
        for (uint x = 0; x < RM; x++)
            A[a][x] = 0.0;
    }

    [[dont_unroll]] for (uint k0 = 0; k0 < K; k0 += 4u * KT4) {
        [[dont_unroll]] for (uint e = lid; e < C * KT4; e += 64u) {
            const uint j = e / KT4, x0 = k0 + 4u * (e % KT4);
            vec4 qv = vec4(0.0), kv = vec4(0.0);
            if (j < L && x0 < K) {
                qv = load_q4(b, tb + j, hq, x0);
                kv = load_k4(b, tb + j, hq, x0);
            }
            smem[OFF_Q + e] = qv;
            smem[OFF_K + e] = kv;
        }
        [[dont_unroll]] for (uint e = lid; e < XT * VT4; e += 64u) {
            const uint x = e / VT4, i = k0 + x, c4 = v40 + e % VT4;
            smem[OFF_S + e] = (i < K && c4 < V4) ? state_buf[st + i * V4 + c4] : vec4(0.0);
        }
        barrier();
        for (uint xg = 0; xg < KT4; xg++) {
            vec4 q[RM];
            for (uint a = 0; a < RM; a++)
                q[a] = smem[OFF_Q + (i0 + a) * KT4 + xg];
            for (uint u = 0; u < XU; u++) {
                const uint sc = OFF_S + (4u * xg) * VT4 + XU * tj + u;
                const vec4 s0 = smem[sc], s1 = smem[sc + VT4], s2 = smem[sc + 2u * VT4],
                           s3 = smem[sc + 3u * VT4];
                for (uint a = 0; a < RM; a++)
                    O[a][u] += q[a].x * s0 + q[a].y * s1 + q[a].z * s2 + q[a].w * s3;
            }
            if (low) {
                vec4 kk[RM];
                for (uint bb = 0; bb < RM; bb++)
                    kk[bb] = smem[OFF_K + (j0 + bb) * KT4 + xg];
                for (uint a = 0; a < RM; a++)
                    for (uint bb = 0; bb < RM; bb++)
                        A[a][bb] += dot(q[a], kk[bb]);
            }
        }
        barrier();
    }

    // row scalings: gates and norms factor out of the K sums
    for (uint a = 0; a < RM; a++) {
        const uint i = i0 + a;
        const float gi = s_g[i], qi = s_iq[i];
        const float ei = exp(gi) * qi;
        for (uint u = 0; u < XU; u++)
            O[a][u] *= ei;
        for (uint bb = 0; bb < RM; bb++) {
            const uint j = j0 + bb;
            A[a][bb] = (low && j <= i && j < L) ? A[a][bb] * qi * s_ik[j] * exp(gi - s_g[j]) : 0.0;
        }
    }

    // phase B: the scores to shared (row-major), then O += A V' over tiles of XT rows of V'
    for (uint a = 0; a < RM; a++) {
        const uint i = i0 + a;
        if (RM % 4u == 0u) {
            for (uint g = 0; g < RM / 4u; g++)
                smem[OFF_A + i * C4 + j0 / 4u + g] =
                    vec4(A[a][4u * g], A[a][4u * g + 1u], A[a][4u * g + 2u], A[a][4u * g + 3u]);
        } else {
            for (uint bb = 0; bb < RM; bb++)
                smem[OFF_A + i * C4 + (j0 + bb) / 4u][(j0 + bb) % 4u] = A[a][bb];
        }
    }
    [[dont_unroll]] for (uint jt = 0; jt < L; jt += XT) {
        barrier();
        [[dont_unroll]] for (uint e = lid; e < XT * VT4; e += 64u) {
            const uint j = jt + e / VT4, c4 = v40 + e % VT4;
            smem[OFF_V + e] = (j < L && c4 < V4) ? work_buf[work_u(rec) + j * V4 + c4] : vec4(0.0);
        }
        barrier();
        if (jt < i0 + RM) // the scores are zero right of the diagonal
            for (uint xg = 0; xg < XT / 4u; xg++) {
                vec4 av[RM];
                for (uint a = 0; a < RM; a++)
                    av[a] = smem[OFF_A + (i0 + a) * C4 + jt / 4u + xg];
                for (uint u = 0; u < XU; u++) {
                    const uint vc = OFF_V + (4u * xg) * VT4 + XU * tj + u;
                    const vec4 p0 = smem[vc], p1 = smem[vc + VT4], p2 = smem[vc + 2u * VT4],
                               p3 = smem[vc + 3u * VT4];
                    for (uint a = 0; a < RM; a++)
                        O[a][u] += av[a].x * p0 + av[a].y * p1 + av[a].z * p2 + av[a].w * p3;
                }
            }
    }

    // through shared memory to the output, 64 values at a time, in flat loops (keeps the
    // kernel small)
    for (uint hf = 0; hf < XU / 2u; hf++) {
        barrier();
        if (tj / (8u / (XU / 2u)) == hf)
            for (uint a = 0; a < RM; a++)
                for (uint u = 0; u < XU; u++)
                    smem[(i0 + a) * 16u + (XU * tj + u) % 16u] = O[a][u];
        barrier();
        [[dont_unroll]] for (uint e = lid; e < L * 16u; e += 64u) {
            const uint i = e / 16u, col = 4u * (v40 + 16u * hf + e % 16u);
            if (col < V)
                store_o4(b, tb + i, h, col, pc.scale * smem[e]);
        }
    }
}
