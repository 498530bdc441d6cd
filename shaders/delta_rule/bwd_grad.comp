#version 450
// Delta rule backward, step 5 (parallel over all chunks): the gradients of the chunk's tokens.
// Chunk with entering state S, the gradient dSn of the state leaving it (bwd_scan), V' and dV',
// T = (I + A)^-1, Q, K (normalized), betas b, cumulative log gates G, D_ij = e^(G_i - G_j):
//   D = T^T dV',  E1 = dO S^T,  E2 = D S^T,  F = V' dSn^T
//   MW = (scale dO V'^T) . D (j <= i)  and QK <- QK . (scale dO V'^T)
//   PW = diag(b) dA . D (j < i) with dA = -D V'^T  and KK <- KK . dA
//   dQ = scale e^G E1 + MW K
//   dK = MW^T Q + e^(G_last - G) F - b e^G E2 + PW K + PW^T K
//   dv = b D,  dbeta = v.D - e^G k.E2 + rowsum(KK)
//   dG = scale e^G q.E1 + rowsum - colsum of QK + b rowsum(KK) - colsum(b KK) - b e^G k.E2
//        - e^(G_last - G) k.F, and the last token adds e^(G_last) <S, dSn> + sum e^(G_last - G) k.F
//   dg = the reverse cumulative sum of dG inside the chunk (summed as in step 3)
// With l2norm, dq = (dQ - q (q.dQ)) / |q| (likewise dk), q the normalized query.
// Intermediates live in the chunk's backward record. Four dispatches (BWD_STEP 0 to 3), each
// spreading its elements over the chunk's workgroups (grid x) and their threads, or, with one
// workgroup per chunk, one dispatch (BWD_STEP 4) doing the four in turn with a barrier between
// them (nothing crosses workgroups then; it saves three launches and table loads):
//   0: D, F, E1, MW (and QK . dM), partial sums of <S, dSn>
//   1: E2, PW (and KK . dA), dv
//   2: dQ, dK, and per token dbeta and the terms of dg
//   3: dg, and the l2norm backward of the rows of dq and dk
// Grid: x = workgroups per chunk (at most 16), y = value heads, z = chunks. P0 = C.
#extension GL_GOOGLE_include_directive : require
#define DR_BACKWARD 1
#include "common.glsl"
#include "bwd_layout.glsl"

const uint C = P0;
const uint C4 = C / 4u;
const uint NT = 64u; // threads
shared float s_g[C];
shared float s_ik[C];
shared float s_iq[C];
shared float s_b[C];
shared float s_red[NT];
const uint RM = C / 8u; // rows and columns per thread of the C x C products
const uint KT4 = 4u;    // value columns per staged tile, in vec4s
shared vec4 s_x[C * KT4];
shared vec4 s_w[C * KT4];

// The C x C products of step 0 (dM = scale dO V'^T) and step 1 (dA = -D V'^T), formed as the
// forward's chunk_output forms Q K^T: 8 x 8 threads, thread (ti, tj) owns rows ti*RM.. and
// columns tj*RM.., the rows of dO (or D) and V' staged in shared memory in tiles of 16 value
// columns, so each element is read from the buffers once. Then
//   step 0: MW = dM . D (j <= i) and QK <- QK . dM
//   step 1: PW = diag(b) dA . D (j < i) and KK <- KK . dA
void chunk_products(uint step, uint lid, uint b, uint tb, uint h, uint L, uint vp, uint br)
{
    const uint ti = lid / 8u, tj = lid % 8u, i0 = ti * RM, j0 = tj * RM;
    const bool low = tj <= ti; // the block touches the lower triangle
    const uint brv = br / 4u, C4F = 4u * C4;
    float p[RM][RM];
    for (uint a = 0; a < RM; a++)
        for (uint m = 0; m < RM; m++)
            p[a][m] = 0.0;
    [[dont_unroll]] for (uint v0 = 0; v0 < V; v0 += 4u * KT4) {
        [[dont_unroll]] for (uint e = lid; e < C * KT4; e += NT) {
            const uint j = e / KT4, c4 = v0 / 4u + e % KT4;
            const bool ok = j < L && c4 < V4;
            s_x[e] = !ok ? vec4(0.0)
                         : step == 0u ? load_o4(b, tb + j, h, 4u * c4) : bwd4_buf[brv + R_D + j * V4 + c4];
            s_w[e] = ok ? work_buf[vp + j * V4 + c4] : vec4(0.0);
        }
        barrier();
        if (low)
            for (uint xg = 0; xg < KT4; xg++) {
                vec4 w[RM];
                for (uint m = 0; m < RM; m++)
                    w[m] = s_w[(j0 + m) * KT4 + xg];
                for (uint a = 0; a < RM; a++) {
                    const vec4 x = s_x[(i0 + a) * KT4 + xg];
                    for (uint m = 0; m < RM; m++)
                        p[a][m] += dot(x, w[m]);
                }
            }
        barrier();
    }
    for (uint a = 0; a < RM; a++) {
        const uint i = i0 + a;
        for (uint m = 0; m < RM; m++) {
            const uint j = j0 + m;
            const float d = step == 0u ? pc.scale * p[a][m] : -p[a][m];
            const bool inside = i < L && (step == 0u ? j <= i : j < i);
            const float y = inside ? (step == 0u ? d : s_b[i] * d) * exp(s_g[i] - s_g[j]) : 0.0;
            const uint o = br + i * C4F + j;
            bwd_buf[o + 4u * (step == 0u ? R_MW : R_PW)] = y;
            bwd_buf[o + 4u * (step == 0u ? R_QK : R_KK)] *= d; // zero where QK, KK are
        }
    }
}

shared vec4 s_s[64u * KT4];
shared vec4 s_n[64u * KT4];

// F = V' dSn^T and E1 = dO S^T (step 0) in the same way: thread (ti, tj) owns rows ti*RM.. and
// the key columns 8tj.. of each tile of 64 keys; V', dO, S and dSn staged in tiles of 16 value
// columns.
void key_products(uint lid, uint b, uint tb, uint h, uint L, uint vp, uint st, uint brv)
{
    const uint ti = lid / 8u, tj = lid % 8u, i0 = ti * RM;
    [[dont_unroll]] for (uint k0 = 0; k0 < K; k0 += 64u) {
        vec4 f[RM][2], e1[RM][2];
        for (uint a = 0; a < RM; a++)
            for (uint u = 0; u < 2u; u++) {
                f[a][u] = vec4(0.0);
                e1[a][u] = vec4(0.0);
            }
        [[dont_unroll]] for (uint v0 = 0; v0 < V4; v0 += KT4) {
            [[dont_unroll]] for (uint e = lid; e < C * KT4; e += NT) {
                const uint j = e / KT4, c4 = v0 + e % KT4;
                const bool ok = j < L && c4 < V4;
                s_x[e] = ok ? work_buf[vp + j * V4 + c4] : vec4(0.0);
                s_w[e] = ok ? load_o4(b, tb + j, h, 4u * c4) : vec4(0.0);
            }
            [[dont_unroll]] for (uint e = lid; e < 64u * KT4; e += NT) {
                const uint x = k0 + e / KT4, c4 = v0 + e % KT4;
                const bool ok = x < K && c4 < V4;
                s_s[e] = ok ? state_buf[st + x * V4 + c4] : vec4(0.0);
                s_n[e] = ok ? bwd4_buf[brv + R_DSN + x * V4 + c4] : vec4(0.0);
            }
            barrier();
            for (uint xg = 0; xg < KT4; xg++) {
                vec4 sv[8], dn[8];
                for (uint m = 0; m < 8u; m++) {
                    sv[m] = s_s[(8u * tj + m) * KT4 + xg];
                    dn[m] = s_n[(8u * tj + m) * KT4 + xg];
                }
                for (uint a = 0; a < RM; a++) {
                    const vec4 vr = s_x[(i0 + a) * KT4 + xg], o = s_w[(i0 + a) * KT4 + xg];
                    for (uint m = 0; m < 8u; m++) {
                        f[a][m / 4u][m % 4u] += dot(vr, dn[m]);
                        e1[a][m / 4u][m % 4u] += dot(o, sv[m]);
                    }
                }
            }
            barrier();
        }
        for (uint a = 0; a < RM; a++)
            for (uint u = 0; u < 2u; u++) {
                const uint x4 = k0 / 4u + 2u * tj + u;
                if (x4 < K4) {
                    const uint o = brv + (i0 + a) * K4 + x4;
                    bwd4_buf[o + R_F] = f[a][u];
                    bwd4_buf[o + R_E1] = e1[a][u];
                }
            }
    }
}

shared vec4 s_y[C * KT4];

// dQ = scale e^G E1 + MW K and dK = e^(G_last - G) F - b e^G E2 + MW^T Q + (PW + PW^T) K
// (step 2) like key_products: thread (ti, tj) owns rows ti*RM.. and the key columns 8tj.. of
// each tile of 64 keys (tiles spread over the chunk's workgroups); the contraction over the
// tokens j runs in tiles of JT, staging MW[i][j], MW[j][i], PW[i][j] + PW[j][i] (all rows i)
// and the rows j of k and q in shared memory. MW and PW are zero outside their triangles and
// in rows >= L, so padded tokens add nothing.
const uint JT = 4u * KT4;
void tok_products(uint lid, uint b, uint tb, uint hq, uint L, uint brv)
{
    const uint ti = lid / 8u, tj = lid % 8u, i0 = ti * RM;
    [[dont_unroll]] for (uint k0 = 64u * gl_WorkGroupID.x; k0 < K; k0 += 64u * gl_NumWorkGroups.x) {
        vec4 dq[RM][2], dk[RM][2];
        for (uint a = 0; a < RM; a++) {
            const uint i = i0 + a;
            const float eg = exp(s_g[i]), ed = exp(s_g[L - 1u] - s_g[i]);
            for (uint u = 0; u < 2u; u++) {
                const uint x4 = k0 / 4u + 2u * tj + u, row = brv + i * K4 + x4;
                const bool ok = i < L && x4 < K4;
                dq[a][u] = ok ? pc.scale * eg * bwd4_buf[row + R_E1] : vec4(0.0);
                dk[a][u] = ok ? ed * bwd4_buf[row + R_F] - s_b[i] * eg * bwd4_buf[row + R_E2] : vec4(0.0);
            }
        }
        [[dont_unroll]] for (uint j0 = 0; j0 < L; j0 += JT) {
            // rows i of MW, PW at columns j0.. are vec4s; so are rows j at columns 4 it4..,
            // scattered into the transposed tiles
            [[dont_unroll]] for (uint e = lid; e < C * KT4; e += NT) {
                const uint i = e / KT4, jg = e % KT4, it4 = e % C4, jj = e / C4;
                s_x[e] = bwd4_buf[brv + R_MW + i * C4 + j0 / 4u + jg];
                s_y[e] = bwd4_buf[brv + R_PW + i * C4 + j0 / 4u + jg];
                const vec4 mt = bwd4_buf[brv + R_MW + (j0 + jj) * C4 + it4];
                for (uint c = 0; c < 4u; c++)
                    s_w[(4u * it4 + c) * KT4 + jj / 4u][jj % 4u] = mt[c];
            }
            barrier();
            [[dont_unroll]] for (uint e = lid; e < C * KT4; e += NT) {
                const uint it4 = e % C4, jj = e / C4;
                const vec4 pt = bwd4_buf[brv + R_PW + (j0 + jj) * C4 + it4];
                for (uint c = 0; c < 4u; c++)
                    s_y[(4u * it4 + c) * KT4 + jj / 4u][jj % 4u] += pt[c];
            }
            [[dont_unroll]] for (uint e = lid; e < JT * 16u; e += NT) {
                const uint jj = e / 16u, j = j0 + jj, x4 = k0 / 4u + e % 16u;
                const bool ok = j < L && x4 < K4;
                s_s[e] = ok ? load_k4(b, tb + j, hq, 4u * x4) * s_ik[j] : vec4(0.0);
                s_n[e] = ok ? load_q4(b, tb + j, hq, 4u * x4) * s_iq[j] : vec4(0.0);
            }
            barrier();
            for (uint jg = 0; jg < KT4; jg++) {
                vec4 kr[4][2], qr[4][2];
                for (uint m = 0; m < 4u; m++)
                    for (uint u = 0; u < 2u; u++) {
                        kr[m][u] = s_s[(4u * jg + m) * 16u + 2u * tj + u];
                        qr[m][u] = s_n[(4u * jg + m) * 16u + 2u * tj + u];
                    }
                for (uint a = 0; a < RM; a++) {
                    const uint x = (i0 + a) * KT4 + jg;
                    const vec4 mw = s_x[x], mt = s_w[x], pw = s_y[x];
                    for (uint m = 0; m < 4u; m++)
                        for (uint u = 0; u < 2u; u++) {
                            dq[a][u] += mw[m] * kr[m][u];
                            dk[a][u] += mt[m] * qr[m][u] + pw[m] * kr[m][u];
                        }
                }
            }
            barrier();
        }
        for (uint a = 0; a < RM; a++)
            for (uint u = 0; u < 2u; u++) {
                const uint x4 = k0 / 4u + 2u * tj + u;
                if (x4 < K4) {
                    const uint o = brv + (i0 + a) * K4 + x4;
                    bwd4_buf[o + R_DQ] = dq[a][u];
                    bwd4_buf[o + R_DK] = dk[a][u];
                }
            }
    }
}

void main()
{
    const uint lid = gl_LocalInvocationID.x;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    const uint c = pc.c_begin + gl_WorkGroupID.z;
    const uint hq = h / pc.group;
    uint s, local0, b, t0, len;
    chunk_info(c, C, s, local0);
    seq_info(s, b, t0, len);
    const uint L = min(C, len - local0);
    const uint tb = t0 + local0;
    const uint rec = work_rec(h, c);
    const uint st = state_at(h, c);
    const uint tm = tmat_at(h, c);
    const uint br = bwd_rec(pc.beta_base, h, c);
    const uint C4F = 4u * BR_C4, V4F = 4u * BR_V4, K4F = 4u * BR_K4;
    const uint vp = work_u(rec); // V' (chunk_scan replaced U by it)

    for (uint j = lid; j < C; j += NT) {
        const vec4 inf = work_buf[work_info(rec) + j];
        s_g[j] = inf.x;
        s_ik[j] = inf.y;
        s_iq[j] = inf.z;
        s_b[j] = inf.w;
    }
    barrier();
    const float gl = s_g[L - 1u];

    const uint step = BWD_STEP;
    const bool all = step == 4u; // one workgroup per chunk: every step in this dispatch
    const uint brv = br / 4u;    // the record in vec4 units
    if (step == 0u || all) {
    // D, F, E1, MW (and QK . dM), <S, dSn>; rows are read as vec4s (zero padded)
    // D = T^T dV', 8 rows x 4 value column groups per element (each load feeds 8 to 32
    // multiply-adds); row i of T at columns j0.. is two vec4s, zero above the diagonal
    const uint VB = (V4 + 3u) / 4u;
    [[dont_unroll]] for (uint e = elem0(); e < (C / 8u) * VB; e += elem_step()) {
        const uint j0 = 8u * (e / VB), v0 = 4u * (e % VB);
        vec4 acc[8][4];
        [[unroll]] for (uint a = 0; a < 8u; a++)
            [[unroll]] for (uint u = 0; u < 4u; u++)
                acc[a][u] = vec4(0.0);
        [[dont_unroll]] for (uint i = j0; i < L; i++) {
            const vec4 t0 = tmat_buf[tm + i * C4 + j0 / 4u];
            const vec4 t1 = tmat_buf[tm + i * C4 + j0 / 4u + 1u];
            vec4 dv[4];
            [[unroll]] for (uint u = 0; u < 4u; u++)
                dv[u] = v0 + u < V4 ? bwd4_buf[brv + R_DVP + i * V4 + v0 + u] : vec4(0.0);
            [[unroll]] for (uint a = 0; a < 4u; a++)
                [[unroll]] for (uint u = 0; u < 4u; u++) {
                    acc[a][u] += t0[a] * dv[u];
                    acc[a + 4u][u] += t1[a] * dv[u];
                }
        }
        [[unroll]] for (uint a = 0; a < 8u; a++)
            [[unroll]] for (uint u = 0; u < 4u; u++)
                if (v0 + u < V4)
                    bwd4_buf[brv + R_D + (j0 + a) * V4 + v0 + u] = acc[a][u];
    }
    // F and E1, dM (one workgroup per chunk; the other parts spread over all)
    if (gl_WorkGroupID.x == 0u) {
        key_products(lid, b, tb, h, L, vp, st, brv);
        chunk_products(0u, lid, b, tb, h, L, vp, br);
    }
    {
        float acc = 0.0;
        [[dont_unroll]] for (uint e = elem0(); e < K * V4; e += elem_step())
            acc += dot(state_buf[st + e], bwd4_buf[brv + R_DSN + e]);
        s_red[lid] = acc;
    }
    barrier();
    if (lid == 0u) {
        float acc = 0.0;
        for (uint m = 0; m < NT; m++)
            acc += s_red[m];
        bwd_buf[br + 4u * R_RED + gl_WorkGroupID.x] = acc;
    }
    if (!all)
        return;
    memoryBarrierBuffer(); // the step's records, read by the next one
    barrier();
    }

    if (step == 1u || all) {
    // E2, PW (and KK . dA), dv
    // E2 in 4 x 4 blocks
    [[dont_unroll]] for (uint e = elem0(); e < C4 * K4; e += elem_step()) {
        const uint j0 = 4u * (e / K4), x4 = e % K4;
        vec4 acc[4];
        [[unroll]] for (uint a = 0; a < 4u; a++)
            acc[a] = vec4(0.0);
        [[dont_unroll]] for (uint v4 = 0; v4 < V4; v4++) {
            vec4 dr[4], sv[4];
            [[unroll]] for (uint a = 0; a < 4u; a++) {
                dr[a] = j0 + a < L ? bwd4_buf[brv + R_D + (j0 + a) * V4 + v4] : vec4(0.0);
                sv[a] = 4u * x4 + a < K ? state_buf[st + (4u * x4 + a) * V4 + v4] : vec4(0.0);
            }
            [[unroll]] for (uint a = 0; a < 4u; a++)
                [[unroll]] for (uint m = 0; m < 4u; m++)
                    acc[a][m] += dot(dr[a], sv[m]);
        }
        [[unroll]] for (uint a = 0; a < 4u; a++)
            bwd4_buf[brv + R_E2 + (j0 + a) * K4 + x4] = acc[a];
    }
    // dA (one workgroup per chunk)
    if (gl_WorkGroupID.x == 0u)
        chunk_products(1u, lid, b, tb, h, L, vp, br);
    [[dont_unroll]] for (uint e = elem0(); e < C * V4; e += elem_step()) {
        const uint j = e / V4;
        bwd4_buf[brv + R_DV + e] = j < L ? s_b[j] * bwd4_buf[brv + R_D + e] : vec4(0.0);
    }
    if (!all)
        return;
    memoryBarrierBuffer(); // the step's records, read by the next one
    barrier();
    }

    if (step == 2u || all) {
    // dQ, dK (of the normalized q, k), the key tiles spread over the chunk's workgroups
    tok_products(lid, b, tb, hq, L, brv);
    [[dont_unroll]] for (uint i = elem0(); i < C; i += elem_step()) {
        float dG = 0.0, db = 0.0, r = 0.0;
        if (i < L) {
            float vd = 0.0, ke2 = 0.0, qe1 = 0.0, kf = 0.0;
            [[dont_unroll]] for (uint v4 = 0; v4 < V4; v4++)
                vd += dot(load_v4(b, tb + i, h, 4u * v4), bwd4_buf[brv + R_D + i * V4 + v4]);
            [[dont_unroll]] for (uint x4 = 0; x4 < K4; x4++) {
                const vec4 kx = load_k4(b, tb + i, hq, 4u * x4) * s_ik[i];
                const uint row = i * K4 + x4;
                ke2 += dot(kx, bwd4_buf[brv + R_E2 + row]);
                kf += dot(kx, bwd4_buf[brv + R_F + row]);
                qe1 += dot(load_q4(b, tb + i, hq, 4u * x4) * s_iq[i], bwd4_buf[brv + R_E1 + row]);
            }
            float rkk = 0.0;
            [[dont_unroll]] for (uint j = 0; j < i; j++)
                rkk += bwd_buf[br + 4u * R_KK + i * C4F + j];
            const float eg = exp(s_g[i]);
            db = vd - eg * ke2 + rkk;
            r = exp(gl - s_g[i]) * kf;
            dG = eg * (pc.scale * qe1 - s_b[i] * ke2);
        }
        const uint di = br + 4u * (R_DB + i);
        bwd_buf[di] = db;
        bwd_buf[di + 1u] = dG;
        bwd_buf[di + 2u] = r;
    }
    if (!all)
        return;
    memoryBarrierBuffer(); // the step's records, read by the next one
    barrier();
    }

    // step 3: dg_t = sum_{i >= t} dG_i of the gradient w.r.t. the cumulative gate G. The terms
    // of dG that come as row sum minus column sum (of QK . dM and diag(b) KK . dA) and the
    // e^(G_last - G) k.F terms cancel in that sum except across t; summing only what is left
    // keeps the small gradients of strongly decayed tokens accurate:
    //   dg_t = e^(G_last) <S, dSn> + sum_{i >= t} a_i + sum_{j < t} r_j
    //          + sum_{i >= t > j} (QK . dM + diag(b) KK . dA)_ij
    // with a_i = e^G_i (scale q.E1 - b k.E2)_i and r_j = e^(G_last - G_j) k_j.F_j (step 2).
    {
        float sd = 0.0;
        for (uint m = 0; m < gl_NumWorkGroups.x; m++)
            sd += bwd_buf[br + 4u * R_RED + m];
        [[dont_unroll]] for (uint t = elem0(); t < C; t += elem_step()) {
            float acc = 0.0;
            if (t < L) {
                acc = exp(gl) * sd;
                [[dont_unroll]] for (uint i = 0; i < L; i++)
                    acc += bwd_buf[br + 4u * (R_DB + i) + (i >= t ? 1u : 2u)];
                [[dont_unroll]] for (uint i = t; i < L; i++) {
                    vec4 row = vec4(0.0); // columns j < t, four at a time
                    [[dont_unroll]] for (uint j0 = 0; j0 < t; j0 += 4u) {
                        const vec4 y = bwd4_buf[brv + R_QK + i * C4 + j0 / 4u] +
                                       s_b[i] * bwd4_buf[brv + R_KK + i * C4 + j0 / 4u];
                        row += j0 + 4u <= t ? y : vec4(lessThan(uvec4(j0) + uvec4(0, 1, 2, 3), uvec4(t))) * y;
                    }
                    acc += row.x + row.y + row.z + row.w;
                }
            }
            bwd_buf[br + 4u * (R_DB + t) + 3u] = acc;
        }
    }
    // through the l2 normalization, dx = (dX - X (X.dX)) / |x| with X = x / |x|
    if (L2NORM) {
        [[dont_unroll]] for (uint e = elem0(); e < 2u * C; e += elem_step()) {
            const uint i = e % C, isk = e / C;
            if (i >= L)
                continue;
            const uint row = brv + (isk == 1u ? R_DK : R_DQ) + i * K4;
            const float inv = isk == 1u ? s_ik[i] : s_iq[i];
            float dot_ = 0.0;
            [[dont_unroll]] for (uint x4 = 0; x4 < K4; x4++)
                dot_ += dot((isk == 1u ? load_k4(b, tb + i, hq, 4u * x4) : load_q4(b, tb + i, hq, 4u * x4)) * inv,
                            bwd4_buf[row + x4]);
            [[dont_unroll]] for (uint x4 = 0; x4 < K4; x4++) {
                const vec4 xh = (isk == 1u ? load_k4(b, tb + i, hq, 4u * x4) : load_q4(b, tb + i, hq, 4u * x4)) * inv;
                bwd4_buf[row + x4] = inv * (bwd4_buf[row + x4] - xh * dot_);
            }
        }
    }
}
