#version 450
// Causal linear attention, backward, step 7: dg and dg_gamma from the per-tile partial sums
// of dL/dG_t (bwd_dqk). dg_t is the reverse cumulative sum inside the chunk of the sum over
// key tiles; dg_gamma[h] sums dg over every token of every sequence: each thread adds up
// whole chunks, then a tree in shared memory (no atomics, the same order on every run).
// Grid: x = 1, y = heads, z = 1; every chunk of the call.
#extension GL_GOOGLE_include_directive : require
#include "bwd_common.glsl"

const uint NT = 64u;
shared float s_red[NT];

void main()
{
    const uint lid = gl_LocalInvocationID.x;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    float acc = 0.0;
    for (uint c = lid; c < pc.nchunks; c += NT) {
        uint s, b, tb, L, local0, len;
        chunk_coords(c, s, b, tb, L, local0, len);
        const uint base = chunk_row(pc.r_dgp, h, c, NKT * C);
        float run = 0.0;
        for (uint t = L; t-- > 0u;) {
            float p = 0.0;
            for (uint kt = 0; kt < NKT; kt++)
                p += scr[base + kt * C + t];
            run += p;
            if (WANT_DG)
                outa[pc.outa_base + (b * pc.T + tb + t) * H + h] = run;
            acc += run;
        }
    }
    s_red[lid] = acc;
    barrier();
    for (uint w = NT / 2u; w > 0u; w /= 2u) {
        if (lid < w)
            s_red[lid] += s_red[lid + w];
        barrier();
    }
    if (WANT_DGAMMA && lid == 0u)
        outb[pc.outb_base + h] = s_red[0];
}
