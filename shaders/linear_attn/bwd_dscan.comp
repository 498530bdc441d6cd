#version 450
// Causal linear attention, backward, step 4 (sequential over the chunks of a sequence in
// reverse, parallel over heads and state elements): replaces each chunk's contribution X_n by
// D_n, the gradient of the state leaving chunk n, with D_last = dht (0 when absent) and
// D_(n-1) = e^(G_last,n) D_n + X_n; what is left at the start is dh0. The normalizer column
// (z) starts from 0 and has no dh0. Grid: x = state elements / 256, y = heads, z = sequences.
#extension GL_GOOGLE_include_directive : require
#include "bwd_common.glsl"

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

    float D = (HAS_DHT && col < V) ? dht_buf[pc.dht_base + ((s * H + h) * K + i) * V + col] : 0.0;
    for (uint m = n; m-- > 0u;) {
        const uint c = first + m;
        const uint idx = chunk_row(pc.r_dst, h, c, K * VP) + i * VP + col;
        const float x = scr[idx];
        scr[idx] = D;
        D = exp(scr[chunk_row(pc.r_decay, h, c, KD) + (HAS_GK ? i : 0u)]) * D + x;
    }
    if (WANT_DH0 && col < V)
        outa[pc.outa_base + ((s * H + h) * K + i) * V + col] = D;
}
