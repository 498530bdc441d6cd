#version 450
// Delta rule, recurrent form: one step per token, the state on chip (also the decode step).
// Per token, with the state S before the token and d = e^g:
//   u = beta (v - d S^T k),  o = scale (d S^T q + (q.k) u),  S <- d S + k u^T
// so a single reduction over K per token gives S^T k, S^T q, q.k (and |k|^2, |q|^2 for
// l2norm); the state is read once (h0) and written once (ht).
// Workgroup: VT value columns x KS threads splitting K; thread owns ROWS rows of one column.
// Grid: x = column tiles, y = value heads of this dispatch, z = sequences.
// P0 = KS, P1 = VT, P2 = ROWS (= ceil(K / KS)).
#extension GL_GOOGLE_include_directive : require
#if SUBGROUP
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif
#include "common.glsl"

const uint KS = P0;
const uint VT = P1;
const uint ROWS = P2;

#if !SUBGROUP
// partial sums (S^T k, S^T q, q.k, |k|^2) and |q|^2, double-buffered: one barrier per token
shared vec4 red4[2 * KS * VT];
shared float red1[2 * KS * VT];
#endif

void main()
{
    const uint lid = gl_LocalInvocationID.x;
    const uint ks = lid % KS;
    const uint col = lid / KS;
    const uint v = gl_WorkGroupID.x * VT + col;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    const uint s = pc.s_begin + gl_WorkGroupID.z;
    const uint hq = h / pc.group;
    const bool vok = v < V;
    const bool l2 = L2NORM;
    uint b, t0, len;
    seq_info(s, b, t0, len);

    float S[ROWS];
    for (uint r = 0; r < ROWS; r++) {
        uint i = r * KS + ks;
        S[r] = (HAS_H0 && vok && i < K) ? h0_buf[pc.h0_base + ((s * pc.HV + h) * K + i) * V + v] : 0.0;
    }

    uint buf = 0u;
    [[dont_unroll]] for (uint n = 0; n < len; n++) {
        const uint t = t0 + n;
        float kr[ROWS];
        vec4 acc = vec4(0.0); // S^T k, S^T q, q.k, |k|^2
        float qq = 0.0;
        for (uint r = 0; r < ROWS; r++) {
            uint i = r * KS + ks;
            float kk = 0.0, qv = 0.0;
            if (i < K) {
                kk = load_k(b, t, hq, i);
                qv = load_q(b, t, hq, i);
            }
            kr[r] = kk;
            acc += vec4(kk * S[r], qv * S[r], qv * kk, kk * kk);
            qq += qv * qv;
        }
#if SUBGROUP
        acc = subgroupAdd(acc);
        if (l2)
            qq = subgroupAdd(qq);
#else
        const uint rb = buf * KS * VT;
        red4[rb + lid] = acc;
        red1[rb + lid] = qq;
        barrier();
        acc = vec4(0.0);
        qq = 0.0;
        for (uint j = 0; j < KS; j++)
            acc += red4[rb + col * KS + j];
        if (l2)
            for (uint j = 0; j < KS; j++)
                qq += red1[rb + col * KS + j];
        buf ^= 1u;
#endif
        const float ik = l2 ? 1.0 / sqrt(acc.w + L2_EPS) : 1.0;
        const float iq = l2 ? 1.0 / sqrt(qq + L2_EPS) : 1.0;
        const float d = HAS_G ? exp(load_g(b, t, h)) : 1.0;
        const float beta = load_beta(b, t, h);
        const float vv = vok ? load_v(b, t, h, v) : 0.0;
        const float u = beta * (vv - d * acc.x * ik);
        if (ks == 0u && vok)
            store_o(b, t, h, v, pc.scale * iq * (d * acc.y + acc.z * ik * u));
        const float ku = ik * u;
        for (uint r = 0; r < ROWS; r++)
            S[r] = d * S[r] + kr[r] * ku;
    }

    if (HAS_HT && vok)
        for (uint r = 0; r < ROWS; r++) {
            uint i = r * KS + ks;
            if (i < K)
                ht_buf[pc.ht_base + ((s * pc.HV + h) * K + i) * V + v] = S[r];
        }
}
