#version 450
// Causal linear attention, backward, step 1 (parallel over all chunks): the two in-chunk
// score matrices of a chunk,
//   A[t][s] = sum_i q_t[i] k_s[i] e^(G_t[i] - G_s[i])   (the forward's masked, decayed scores)
//   P[t][s] = sum_j do_t[j] v_s[j]                        (upstream gradient against values)
// both for s <= t inside the chunk and 0 elsewhere. Without gk, P is stored decayed,
// P[t][s] e^(G_t - G_s) with the scalar G, as steps 5 use it (with normalize, step 2 rewrites P
// for the normalised output and applies the decay there). Decay exponents are selected only
// where s <= t.
//
// Workgroup of (C/4)^2 threads; thread (ti, tj) owns the 4x4 block rows 4ti.., columns 4tj..
// (blocks above the diagonal are all masked and skip the sums). Channel tiles of KT keys (for
// A) and of KT value columns (for P) are staged in shared memory channel-major, so each
// thread reads one vec4 of rows and one of columns per channel.
// Grid: x = 1, y = heads, z = chunks. P0 = C.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "bwd_common.glsl"

const uint NB = C / 4u;
const uint NT = NB * NB;
shared vec4 sa[KT * C / 4u];
shared vec4 sb[KT * C / 4u];

vec4 gc4(uint xx, uint t4) { return vec4(s_gc[xx * C + t4], s_gc[xx * C + t4 + 1u], s_gc[xx * C + t4 + 2u], s_gc[xx * C + t4 + 3u]); }

void main()
{
    load_strides();
    const uint lid = gl_LocalInvocationID.x;
    const uint ti = lid / NB, tj = lid % NB;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    const uint c = pc.c_begin + gl_WorkGroupID.z;
    uint s, b, tb, L, local0, len;
    chunk_coords(c, s, b, tb, L, local0, len);
    chunk_scalar_decay(lid, NT, b, tb, h, L);
    const uvec4 rows = uvec4(4u * ti) + uvec4(0u, 1u, 2u, 3u);
    const bool in_lower = tj <= ti;

    vec4 A[4], P[4];   // [y][a]: row 4ti+a, column 4tj+y
    [[unroll]] for (uint y = 0; y < 4u; y++) { A[y] = vec4(0.0); P[y] = vec4(0.0); }

    for (uint x0 = 0; x0 < K; x0 += KT) {
        if (HAS_GK)
            chunk_channel_decay(lid, b, tb, h, L, x0);
        else
            barrier();
        for (uint e = lid; e < KT * C; e += NT) {
            const uint xx = e / C, t = e % C;
            const bool ok = t < L && x0 + xx < K;
            sa[e >> 2u][e & 3u] = ok ? load_q(b, tb + t, h, x0 + xx) : 0.0;
            sb[e >> 2u][e & 3u] = ok ? load_k(b, tb + t, h, x0 + xx) : 0.0;
        }
        barrier();
        if (in_lower) {
            for (uint xx = 0; xx < KT; xx++) {
                const vec4 qi = sa[(xx * C) / 4u + ti];
                const vec4 kj = sb[(xx * C) / 4u + tj];
                if (HAS_GK) {
                    const vec4 gi = gc4(xx, 4u * ti), gj = gc4(xx, 4u * tj);
                    [[unroll]] for (uint y = 0; y < 4u; y++) {
                        const bvec4 lower = lessThanEqual(uvec4(4u * tj + y), rows);
                        A[y] += qi * kj[y] * exp(mix(vec4(0.0), gi - gj[y], lower));
                    }
                } else {
                    [[unroll]] for (uint y = 0; y < 4u; y++)
                        A[y] += qi * kj[y];
                }
            }
        }
    }
    for (uint j0 = 0; j0 < V; j0 += KT) {
        barrier();
        for (uint e = lid; e < KT * C; e += NT) {
            const uint xx = e / C, t = e % C;
            const bool ok = t < L && j0 + xx < V;
            sa[e >> 2u][e & 3u] = ok ? load_do(b, tb + t, h, j0 + xx) : 0.0;
            sb[e >> 2u][e & 3u] = ok ? load_v(b, tb + t, h, j0 + xx) : 0.0;
        }
        barrier();
        if (in_lower) {
            for (uint xx = 0; xx < KT; xx++) {
                const vec4 di = sa[(xx * C) / 4u + ti];
                const vec4 vj = sb[(xx * C) / 4u + tj];
                [[unroll]] for (uint y = 0; y < 4u; y++)
                    P[y] += di * vj[y];
            }
        }
    }

    const vec4 gsi = vec4(s_gs[rows.x], s_gs[rows.y], s_gs[rows.z], s_gs[rows.w]);
    const uint ab = chunk_row(pc.r_amat, h, c, C * C), pb = chunk_row(pc.r_pmat, h, c, C * C);
    [[unroll]] for (uint y = 0; y < 4u; y++) {
        const uint sc = 4u * tj + y;
        const bvec4 keep = bvec4(sc <= rows.x && rows.x < L, sc <= rows.y && rows.y < L,
                                 sc <= rows.z && rows.z < L, sc <= rows.w && rows.w < L);
        vec4 a = A[y], p = P[y];
        if (!HAS_GK) {
            const vec4 dec = exp(mix(vec4(0.0), gsi - s_gs[sc], keep));
            a *= dec;
            if (!NORMALIZE)
                p *= dec;
        }
        a = mix(vec4(0.0), a, keep);
        p = mix(vec4(0.0), p, keep);
        [[unroll]] for (uint r = 0; r < 4u; r++) {
            scr[ab + rows[r] * C + sc] = a[r];
            scr[pb + rows[r] * C + sc] = p[r];
        }
    }
}
