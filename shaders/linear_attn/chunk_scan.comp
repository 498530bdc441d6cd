#version 450
// Causal linear attention, chunk form, step 2 (sequential over the chunks of a sequence,
// parallel over heads and state elements): replaces each chunk's contribution dS_n by the
// state entering chunk n, S_{n+1} = e^(G_last,n) S_n + dS_n, starting from h0, ending in ht.
// Grid: x = state elements / WG, y = heads, z = sequences. P0 = C.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

const uint C = P0;

void main()
{
    const uint e = gl_GlobalInvocationID.x;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    const uint s = pc.s_begin + gl_WorkGroupID.z;
    if (e >= K * VP)
        return;
    const uint i = e / VP, col = e % VP;
    uint b, t0, len;
    seq_info(s, b, t0, len);
    const uint first = VARLEN ? seqtab[s].z : s * ((pc.T + C - 1u) / C);
    const uint n = (len + C - 1u) / C;

    float S = 0.0;
    if (col < V && HAS_H0)
        S = h0_buf[pc.h0_base + ((s * H + h) * K + i) * V + col];
    else if (col == V && HAS_Z0)
        S = z0_buf[pc.z0_base + (s * H + h) * K + i];

    for (uint m = 0; m < n; m++) {
        const uint c = first + m;
        const uint idx = pc.st_base + ((h * pc.nchunks + c) * K + i) * VP + col;
        const float d = state_buf[idx];
        state_buf[idx] = S;
        const float g = decay_buf[pc.dc_base + (h * pc.nchunks + c) * KD + (HAS_GK ? i : 0u)];
        S = exp(g) * S + d;
    }
    if (col < V && HAS_HT)
        ht_buf[pc.ht_base + ((s * H + h) * K + i) * V + col] = S;
    else if (col == V && HAS_ZT)
        zt_buf[pc.zt_base + (s * H + h) * K + i] = S;
}
