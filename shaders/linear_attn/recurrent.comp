#version 450
// Causal linear attention, recurrent form: one step per token, the state on chip.
// Workgroup: VT value columns x KS threads splitting K; thread owns ROWS rows of one column.
// Grid: x = column tiles, y = heads of this dispatch, z = sequences.
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
shared float red_o[2 * KS * VT];
shared float red_z[2 * KS * VT];
#endif

void main()
{
    const uint lid = gl_LocalInvocationID.x;
    const uint ks = lid % KS;
    const uint col = lid / KS;
    const uint v = gl_WorkGroupID.x * VT + col;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    const uint s = pc.s_begin + gl_WorkGroupID.z;
    const bool vok = v < V;
    uint b, t0, len;
    seq_info(s, b, t0, len);

    float S[ROWS];
    float Z[ROWS];
    for (uint r = 0; r < ROWS; r++) {
        uint i = r * KS + ks;
        S[r] = (HAS_H0 && vok && i < K) ? h0_buf[pc.h0_base + ((s * H + h) * K + i) * V + v] : 0.0;
        Z[r] = (NORMALIZE && HAS_Z0 && i < K) ? z0_buf[pc.z0_base + (s * H + h) * K + i] : 0.0;
    }

    uint buf = 0u;
    for (uint n = 0; n < len; n++) {
        const uint t = t0 + n;
        const float gs = log_decay_scalar(b, t, h);
        const float vv = vok ? load_v(b, t, h, v) : 0.0;
        float acc = 0.0, zacc = 0.0;
        for (uint r = 0; r < ROWS; r++) {
            uint i = r * KS + ks;
            if (i < K) {
                float dec = exp(gs + log_decay_channel(b, t, h, i));
                float kk = load_k(b, t, h, i);
                float qq = load_q(b, t, h, i);
                S[r] = dec * S[r] + kk * vv;
                acc += S[r] * qq;
                if (NORMALIZE) {
                    Z[r] = dec * Z[r] + kk;
                    zacc += Z[r] * qq;
                }
            }
        }
#if SUBGROUP
        acc = subgroupAdd(acc);
        if (NORMALIZE)
            zacc = subgroupAdd(zacc);
#else
        red_o[buf * KS * VT + lid] = acc;
        if (NORMALIZE)
            red_z[buf * KS * VT + lid] = zacc;
        barrier();
        if (ks == 0u) {
            acc = 0.0;
            zacc = 0.0;
            for (uint j = 0; j < KS; j++) {
                acc += red_o[buf * KS * VT + col * KS + j];
                if (NORMALIZE)
                    zacc += red_z[buf * KS * VT + col * KS + j];
            }
        }
        buf ^= 1u;
#endif
        if (ks == 0u && vok) {
            float o = pc.scale * acc;
            if (NORMALIZE)
                o /= pc.scale * zacc + pc.eps;
            store_o(b, t, h, v, o);
        }
    }

    for (uint r = 0; r < ROWS; r++) {
        uint i = r * KS + ks;
        if (i < K) {
            if (HAS_HT && vok)
                ht_buf[pc.ht_base + ((s * H + h) * K + i) * V + v] = S[r];
            if (NORMALIZE && HAS_ZT && v == 0u)
                zt_buf[pc.zt_base + (s * H + h) * K + i] = Z[r];
        }
    }
}
