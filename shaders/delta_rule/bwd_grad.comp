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
// spreading its elements over the chunk's workgroups (grid x) and their threads:
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
const uint NT = 64u; // threads
shared float s_g[C];
shared float s_ik[C];
shared float s_iq[C];
shared float s_b[C];
shared float s_red[NT];

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
    if (step == 0u) {
    // D, F, E1, MW (and QK . dM), <S, dSn>
    [[dont_unroll]] for (uint e = elem0(); e < C * V; e += elem_step()) {
        const uint j = e / V, v = e % V;
        float acc = 0.0;
        [[dont_unroll]] for (uint i = j; i < L; i++)
            acc += tmat_buf[tm + i * BR_C4 + j / 4u][j % 4u] * bwd_buf[br + 4u * R_DVP + i * V4F + v];
        bwd_buf[br + 4u * R_D + j * V4F + v] = acc;
    }
    [[dont_unroll]] for (uint e = elem0(); e < C * K; e += elem_step()) {
        const uint j = e / K, x = e % K;
        float f = 0.0, e1 = 0.0;
        if (j < L)
            [[dont_unroll]] for (uint v = 0; v < V; v++) {
                const float sv = state_buf[st + x * V4 + v / 4u][v % 4u];
                f += work_buf[vp + j * V4 + v / 4u][v % 4u] * bwd_buf[br + 4u * R_DSN + x * V4F + v];
                e1 += load_o(b, tb + j, h, v) * sv;
            }
        bwd_buf[br + 4u * R_F + j * K4F + x] = f;
        bwd_buf[br + 4u * R_E1 + j * K4F + x] = e1;
    }
    [[dont_unroll]] for (uint e = elem0(); e < C * C; e += elem_step()) {
        const uint i = e / C, j = e % C;
        float mw = 0.0;
        if (j <= i && i < L) {
            float dm = 0.0;
            [[dont_unroll]] for (uint v = 0; v < V; v++)
                dm += load_o(b, tb + i, h, v) * work_buf[vp + j * V4 + v / 4u][v % 4u];
            dm *= pc.scale;
            mw = dm * exp(s_g[i] - s_g[j]);
            bwd_buf[br + 4u * R_QK + i * C4F + j] *= dm;
        }
        bwd_buf[br + 4u * R_MW + i * C4F + j] = mw;
    }
    {
        float acc = 0.0;
        [[dont_unroll]] for (uint e = elem0(); e < K * V; e += elem_step()) {
            const uint x = e / V, v = e % V;
            acc += state_buf[st + x * V4 + v / 4u][v % 4u] * bwd_buf[br + 4u * R_DSN + x * V4F + v];
        }
        s_red[lid] = acc;
    }
    barrier();
    if (lid == 0u) {
        float acc = 0.0;
        for (uint m = 0; m < NT; m++)
            acc += s_red[m];
        bwd_buf[br + 4u * R_RED + gl_WorkGroupID.x] = acc;
    }
    return;
    }

    if (step == 1u) {
    // E2, PW (and KK . dA), dv
    [[dont_unroll]] for (uint e = elem0(); e < C * K; e += elem_step()) {
        const uint j = e / K, x = e % K;
        float acc = 0.0;
        if (j < L)
            [[dont_unroll]] for (uint v = 0; v < V; v++)
                acc += bwd_buf[br + 4u * R_D + j * V4F + v] * state_buf[st + x * V4 + v / 4u][v % 4u];
        bwd_buf[br + 4u * R_E2 + j * K4F + x] = acc;
    }
    [[dont_unroll]] for (uint e = elem0(); e < C * C; e += elem_step()) {
        const uint i = e / C, j = e % C;
        float pw = 0.0;
        if (j < i && i < L) {
            float da = 0.0;
            [[dont_unroll]] for (uint v = 0; v < V; v++)
                da -= bwd_buf[br + 4u * R_D + i * V4F + v] * work_buf[vp + j * V4 + v / 4u][v % 4u];
            pw = s_b[i] * da * exp(s_g[i] - s_g[j]);
            bwd_buf[br + 4u * R_KK + i * C4F + j] *= da;
        }
        bwd_buf[br + 4u * R_PW + i * C4F + j] = pw;
    }
    [[dont_unroll]] for (uint e = elem0(); e < C * V; e += elem_step()) {
        const uint j = e / V, v = e % V;
        bwd_buf[br + 4u * R_DV + j * V4F + v] = j < L ? s_b[j] * bwd_buf[br + 4u * R_D + j * V4F + v] : 0.0;
    }
    return;
    }

    if (step == 2u) {
    // dQ, dK (of the normalized q, k), and the per-token scalars
    [[dont_unroll]] for (uint e = elem0(); e < C * K; e += elem_step()) {
        const uint i = e / K, x = e % K;
        float dq = 0.0, dk = 0.0;
        if (i < L) {
            const float eg = exp(s_g[i]);
            dq = pc.scale * eg * bwd_buf[br + 4u * R_E1 + i * K4F + x];
            dk = exp(gl - s_g[i]) * bwd_buf[br + 4u * R_F + i * K4F + x] -
                 s_b[i] * eg * bwd_buf[br + 4u * R_E2 + i * K4F + x];
            [[dont_unroll]] for (uint j = 0; j < L; j++) {
                const float kj = load_k(b, tb + j, hq, x) * s_ik[j];
                if (j <= i)
                    dq += bwd_buf[br + 4u * R_MW + i * C4F + j] * kj;
                if (j >= i)
                    dk += bwd_buf[br + 4u * R_MW + j * C4F + i] * load_q(b, tb + j, hq, x) * s_iq[j];
                if (j < i)
                    dk += bwd_buf[br + 4u * R_PW + i * C4F + j] * kj;
                if (j > i)
                    dk += bwd_buf[br + 4u * R_PW + j * C4F + i] * kj;
            }
        }
        bwd_buf[br + 4u * R_DQ + i * K4F + x] = dq;
        bwd_buf[br + 4u * R_DK + i * K4F + x] = dk;
    }
    [[dont_unroll]] for (uint i = elem0(); i < C; i += elem_step()) {
        float dG = 0.0, db = 0.0, r = 0.0;
        if (i < L) {
            float vd = 0.0, ke2 = 0.0, qe1 = 0.0, kf = 0.0;
            [[dont_unroll]] for (uint v = 0; v < V; v++)
                vd += load_v(b, tb + i, h, v) * bwd_buf[br + 4u * R_D + i * V4F + v];
            [[dont_unroll]] for (uint x = 0; x < K; x++) {
                const float kx = load_k(b, tb + i, hq, x) * s_ik[i];
                ke2 += kx * bwd_buf[br + 4u * R_E2 + i * K4F + x];
                kf += kx * bwd_buf[br + 4u * R_F + i * K4F + x];
                qe1 += load_q(b, tb + i, hq, x) * s_iq[i] * bwd_buf[br + 4u * R_E1 + i * K4F + x];
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
    return;
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
                [[dont_unroll]] for (uint i = t; i < L; i++)
                    [[dont_unroll]] for (uint j = 0; j < t; j++)
                        acc += bwd_buf[br + 4u * R_QK + i * C4F + j] +
                               s_b[i] * bwd_buf[br + 4u * R_KK + i * C4F + j];
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
            const uint row = br + 4u * (isk == 1u ? R_DK : R_DQ) + i * K4F;
            const float inv = isk == 1u ? s_ik[i] : s_iq[i];
            float dot = 0.0;
            [[dont_unroll]] for (uint x = 0; x < K; x++)
                dot += (isk == 1u ? load_k(b, tb + i, hq, x) : load_q(b, tb + i, hq, x)) * inv * bwd_buf[row + x];
            [[dont_unroll]] for (uint x = 0; x < K; x++) {
                const float xh = (isk == 1u ? load_k(b, tb + i, hq, x) : load_q(b, tb + i, hq, x)) * inv;
                bwd_buf[row + x] = inv * (bwd_buf[row + x] - xh * dot);
            }
        }
    }
}
