#version 450
// Delta rule, chunk form, step 1 (parallel over all chunks): the WY / UT transform.
// With the chunk's keys K (l2norm enters as the row scaling 1/|k|), betas b and cumulative
// log gates G (zero without g):
//   A = strictly_lower( diag(b) (K K^T) . e^(G_i - G_j) ),  T = (I + A)^-1,
//   W = T diag(b e^G) K,  U = T diag(b) V,  KD = K * e^(G_last - G)
// T is built in fp32 in shared memory: each 16 x 16 diagonal block by forward substitution
// (one thread per column), then block row by block row T_IJ = -T_II sum_{J<=X<I} A_IX T_XJ.
// Every exponent is a difference G_i - G_j with j <= i, so <= 0.
// All tiles are row-major vec4 arrays; products are register-blocked (8 x 8 micro-tiles, 4 deep)
// so each vec4 load feeds 8 to 16 multiply-adds: memory instructions dominate on CPU drivers.
// Workgroup: 8 x 8 threads; thread (ti, tj) owns rows ti*RM .. +RM-1 (RM = C/8) and the
// columns tj*RM .. of the C x C blocks, and vec4 columns 2tj, 2tj+1 of each pass of W and U.
// Grid: x = 1, y = value heads, z = chunks. P0 = C (16, 32, 64).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

const uint C = P0;
const uint RM = C / 8u;   // rows (and columns) per thread of the C x C blocks
const uint C4 = C / 4u;
const uint NB = C / 16u;  // diagonal blocks of T
const uint KT4 = 4u;      // key columns per gram tile, in vec4s
const uint XT = 16u;      // rows of the right-hand side per staged tile
const uint XW = 16u;      // vec4 columns per pass of W and U

shared vec4 s_T[C * C4];  // A, then T in place: row-major, zero above the diagonal
// k and q tiles [C][KT4] (gram), the right-hand side [XT][XW] (W, U), M blocks (inversion)
const uint SX = 2u * C * KT4 > XT * XW ? 2u * C * KT4 : XT * XW;
shared vec4 s_x[SX];
// per-token factors, each a vec4 array of C4: G (cumulative log gate), beta, 1/|k|, 1/|q|,
// b e^G / |k| (rows of W), e^(G_last - G) / |k| (rows of KD)
const uint F_G = 0u, F_B = 1u, F_IK = 2u, F_IQ = 3u, F_W = 4u, F_KD = 5u;
shared vec4 s_f[6u * C4];

float fac(uint f, uint j) { return s_f[f * C4 + j / 4u][j % 4u]; }

void main()
{
    const uint lid = gl_LocalInvocationID.x;
    const uint ti = lid / 8u, tj = lid % 8u;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    const uint c = pc.c_begin + gl_WorkGroupID.z;
    const uint hq = h / pc.group;
    const bool l2 = L2NORM;
    uint s, local0, b, t0, len;
    chunk_info(c, C, s, local0);
    seq_info(s, b, t0, len);
    const uint L = min(C, len - local0);
    const uint tb = t0 + local0;
    const uint rec = work_rec(h, c);
    const uint i0 = ti * RM, j0 = tj * RM;
    const bool low = tj <= ti; // this thread's C x C micro-tile touches the lower triangle

    for (uint j = lid; j < C; j += 64u) {
        s_f[F_G * C4 + j / 4u][j % 4u] = j < L ? load_g(b, tb + j, h) : 0.0;
        s_f[F_B * C4 + j / 4u][j % 4u] = j < L ? load_beta(b, tb + j, h) : 0.0;
    }
    barrier();
    if (HAS_G && lid == 0u) {
        float acc = 0.0;
        for (uint j = 0; j < L; j++) {
            acc += s_f[F_G * C4 + j / 4u][j % 4u];
            s_f[F_G * C4 + j / 4u][j % 4u] = acc;
        }
    }

    // Gram matrix K K^T on and below the diagonal, and |q|^2
    float A[RM][RM];
    float qn[RM];
    for (uint a = 0; a < RM; a++) {
        qn[a] = 0.0;
        for (uint x = 0; x < RM; x++)
            A[a][x] = 0.0;
    }
    [[dont_unroll]] for (uint k0 = 0; k0 < K; k0 += 4u * KT4) {
        [[dont_unroll]] for (uint e = lid; e < C * KT4; e += 64u) {
            const uint j = e / KT4, x0 = k0 + 4u * (e % KT4);
            vec4 kv = vec4(0.0), qv = vec4(0.0);
            if (j < L && x0 < K) {
                kv = load_k4(b, tb + j, hq, x0);
                if (l2)
                    qv = load_q4(b, tb + j, hq, x0);
            }
            s_x[e] = kv;
            if (l2)
                s_x[C * KT4 + e] = qv;
        }
        barrier();
        if (low)
            for (uint xg = 0; xg < KT4; xg++) {
                vec4 ki[RM], kj[RM];
                for (uint a = 0; a < RM; a++) {
                    ki[a] = s_x[(i0 + a) * KT4 + xg];
                    kj[a] = s_x[(j0 + a) * KT4 + xg];
                }
                for (uint a = 0; a < RM; a++)
                    for (uint bb = 0; bb < RM; bb++)
                        A[a][bb] += dot(ki[a], kj[bb]);
                if (l2 && tj == 0u)
                    for (uint a = 0; a < RM; a++) {
                        const vec4 qa = s_x[C * KT4 + (i0 + a) * KT4 + xg];
                        qn[a] += dot(qa, qa);
                    }
            }
        barrier();
    }

    // row norms: |k_i|^2 is the diagonal of the Gram matrix
    for (uint a = 0; a < RM; a++) {
        const uint i = i0 + a;
        if (tj == ti)
            s_f[F_IK * C4 + i / 4u][i % 4u] = l2 ? 1.0 / sqrt(A[a][a] + L2_EPS) : 1.0;
        if (tj == 0u)
            s_f[F_IQ * C4 + i / 4u][i % 4u] = l2 ? 1.0 / sqrt(qn[a] + L2_EPS) : 1.0;
    }
    barrier();
    const float glast = fac(F_G, L - 1u);
    for (uint j = lid; j < C; j += 64u) {
        const float g = fac(F_G, j), ik = fac(F_IK, j);
        s_f[F_W * C4 + j / 4u][j % 4u] = j < L ? fac(F_B, j) * exp(g) * ik : 0.0;
        s_f[F_KD * C4 + j / 4u][j % 4u] = j < L ? exp(glast - g) * ik : 0.0;
    }

    // A = strictly_lower(diag(b) K K^T . e^(G_i - G_j)) into s_T
    {
        float gi[RM], bi[RM], iki[RM], gj[RM], ikj[RM];
        for (uint a = 0; a < RM; a++) {
            gi[a] = fac(F_G, i0 + a);
            bi[a] = fac(F_B, i0 + a);
            iki[a] = fac(F_IK, i0 + a);
            gj[a] = fac(F_G, j0 + a);
            ikj[a] = fac(F_IK, j0 + a);
        }
        for (uint a = 0; a < RM; a++) {
            const uint i = i0 + a;
            float row[RM];
            for (uint bb = 0; bb < RM; bb++) {
                const uint j = j0 + bb;
                row[bb] = (low && j < i && i < L) ? bi[a] * A[a][bb] * iki[a] * ikj[bb] * exp(gi[a] - gj[bb]) : 0.0;
            }
            if (RM % 4u == 0u) {
                for (uint g = 0; g < RM / 4u; g++)
                    s_T[i * C4 + j0 / 4u + g] = vec4(row[4u * g], row[4u * g + 1u], row[4u * g + 2u], row[4u * g + 3u]);
            } else {
                for (uint bb = 0; bb < RM; bb++)
                    s_T[i * C4 + (j0 + bb) / 4u][(j0 + bb) % 4u] = row[bb];
            }
        }
    }
    barrier();

    // T = (I + A)^-1. Diagonal blocks: thread (block, column cc) solves its column:
    // T_rc = -sum_{m<r} A_rm T_mc for r > c, T_cc = 1, 0 above.
    float tc[16];
    if (lid < C) {
        const uint o = (lid / 16u) * 16u, cc = lid % 16u;
        [[unroll]] for (uint r = 0; r < 16u; r++) {
            vec4 ar[4];
            [[unroll]] for (uint g = 0; g < 4u; g++)
                ar[g] = 4u * g < r ? s_T[(o + r) * C4 + o / 4u + g] : vec4(0.0);
            float acc = 0.0;
            [[unroll]] for (uint m = 0; m < r; m++)
                acc += ar[m / 4u][m % 4u] * tc[m];
            tc[r] = r < cc ? 0.0 : (r == cc ? 1.0 : -acc);
        }
    }
    barrier();
    if (lid < C) {
        const uint o = (lid / 16u) * 16u, cc = lid % 16u;
        [[unroll]] for (uint r = 0; r < 16u; r++)
            s_T[(o + r) * C4 + (o + cc) / 4u][cc % 4u] = tc[r];
    }
    barrier();
    // Block rows I: M_J = sum_{X=J}^{I-1} A_IX T_XJ, then T_IJ = -T_II M_J (in place of A_IJ).
    // Thread (J, rb, cb) owns rows 4rb..4rb+3 and vec4 column cb of block J.
    {
        const uint J = lid / 16u, rb = (lid / 4u) % 4u, cb = lid % 4u;
        [[dont_unroll]] for (uint I = 1u; I < NB; I++) {
            const uint o = I * 16u;
            if (J < I) {
                vec4 acc[4];
                for (uint u = 0; u < 4u; u++)
                    acc[u] = vec4(0.0);
                for (uint x = J * 16u; x < o; x += 4u) {
                    const vec4 t0 = s_T[x * C4 + J * 4u + cb], t1 = s_T[(x + 1u) * C4 + J * 4u + cb];
                    const vec4 t2 = s_T[(x + 2u) * C4 + J * 4u + cb], t3 = s_T[(x + 3u) * C4 + J * 4u + cb];
                    for (uint u = 0; u < 4u; u++) {
                        const vec4 a = s_T[(o + 4u * rb + u) * C4 + x / 4u];
                        acc[u] += a.x * t0 + a.y * t1 + a.z * t2 + a.w * t3;
                    }
                }
                for (uint u = 0; u < 4u; u++)
                    s_x[(J * 16u + 4u * rb + u) * 4u + cb] = acc[u];
            }
            barrier();
            if (J < I) {
                vec4 acc[4];
                for (uint u = 0; u < 4u; u++)
                    acc[u] = vec4(0.0);
                for (uint m = 0; m < 16u; m += 4u) {
                    const vec4 m0 = s_x[(J * 16u + m) * 4u + cb], m1 = s_x[(J * 16u + m + 1u) * 4u + cb];
                    const vec4 m2 = s_x[(J * 16u + m + 2u) * 4u + cb], m3 = s_x[(J * 16u + m + 3u) * 4u + cb];
                    for (uint u = 0; u < 4u; u++) {
                        const vec4 t = s_T[(o + 4u * rb + u) * C4 + (o + m) / 4u];
                        acc[u] += t.x * m0 + t.y * m1 + t.z * m2 + t.w * m3;
                    }
                }
                for (uint u = 0; u < 4u; u++)
                    s_T[(o + 4u * rb + u) * C4 + J * 4u + cb] = -acc[u];
            }
            barrier();
        }
    }
    if (STORE_T) // for the backward pass
        [[dont_unroll]] for (uint e = lid; e < C * C4; e += 64u)
            tmat_buf[tmat_at(h, c) + e] = s_T[e];

    // [W U] = T [X_k X_v] with X_k = diag(b e^G / |k|) K and X_v = diag(b) V, in passes of XW
    // vec4 columns (K4 of them for W, then V4 for U). The key columns also give
    // KD = K e^(G_last - G) / |k|.
    const uint NC4 = K4 + V4;
    [[dont_unroll]] for (uint c0 = 0; c0 < NC4; c0 += XW) {
        vec4 acc[RM][2];
        for (uint a = 0; a < RM; a++) {
            acc[a][0] = vec4(0.0);
            acc[a][1] = vec4(0.0);
        }
        [[dont_unroll]] for (uint jt = 0; jt < L; jt += XT) {
            barrier();
            [[dont_unroll]] for (uint e = lid; e < XT * XW; e += 64u) {
                const uint j = jt + e / XW, c4 = c0 + e % XW;
                vec4 xv = vec4(0.0);
                if (j < L && c4 < NC4) {
                    if (c4 < K4) {
                        xv = load_k4(b, tb + j, hq, 4u * c4);
                        work_buf[work_kd(rec) + j * K4 + c4] = xv * fac(F_KD, j);
                        xv *= fac(F_W, j);
                    } else {
                        xv = load_v4(b, tb + j, h, 4u * (c4 - K4)) * fac(F_B, j);
                    }
                }
                s_x[e] = xv;
            }
            barrier();
            if (jt < i0 + RM) // T is zero right of the diagonal
                for (uint xg = 0; xg < XT / 4u; xg++) {
                    vec4 t[RM];
                    for (uint a = 0; a < RM; a++)
                        t[a] = s_T[(i0 + a) * C4 + jt / 4u + xg];
                    for (uint u = 0; u < 2u; u++) {
                        const uint xc = (4u * xg) * XW + 2u * tj + u;
                        const vec4 x0 = s_x[xc], x1 = s_x[xc + XW], x2 = s_x[xc + 2u * XW], x3 = s_x[xc + 3u * XW];
                        for (uint a = 0; a < RM; a++)
                            acc[a][u] += t[a].x * x0 + t[a].y * x1 + t[a].z * x2 + t[a].w * x3;
                    }
                }
        }
        for (uint u = 0; u < 2u; u++) {
            const uint c4 = c0 + 2u * tj + u;
            if (c4 < NC4)
                for (uint a = 0; a < RM; a++) {
                    const uint i = i0 + a;
                    if (i < L)
                        work_buf[c4 < K4 ? work_w(rec) + i * K4 + c4 : work_u(rec) + i * V4 + c4 - K4] = acc[a][u];
                }
        }
    }

    for (uint j = lid; j < C; j += 64u)
        work_buf[work_info(rec) + j] = vec4(fac(F_G, j), fac(F_IK, j), fac(F_IQ, j), fac(F_B, j));
}
