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
// Workgroup of (C/8)^2 threads; thread (ti, tj) owns the 8x8 block rows 8ti.., columns 8tj..
// (blocks above the diagonal are all masked and skip the sums). Channel tiles of KT keys (for
// A) and of KT value columns (for P) are staged in shared memory channel-major, so each
// thread reads two vec4 of rows and two of columns per channel for 16 vec4 FMAs. A is
// computed and stored first, then P in the same registers.
// Grid: x = 1, y = heads, z = chunks. P0 = C.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "bwd_common.glsl"

const uint NB = C / 8u;
const uint NT = NB * NB;
shared vec4 sa[KT * C / 4u];
shared vec4 sb[KT * C / 4u];

vec4 gc4(uint xx, uint t4) { return vec4(s_gc[xx * C + t4], s_gc[xx * C + t4 + 1u], s_gc[xx * C + t4 + 2u], s_gc[xx * C + t4 + 3u]); }

// X[4 hh + y]: rows 8ti + 4 (hh % 2) + a, column 8tj + 4 (hh / 2) + y, stored masked to s <= t
// (and t < L); times the scalar decay e^(G_t - G_s) when decay is set
void store_block(uint base, uint ti, uint tj, uint L, bool decay, vec4 X[16])
{
    [[unroll]] for (uint hh = 0; hh < 4u; hh++) {
        const uvec4 rows = uvec4(8u * ti + 4u * (hh % 2u)) + uvec4(0u, 1u, 2u, 3u);
        const vec4 gsi = vec4(s_gs[rows.x], s_gs[rows.y], s_gs[rows.z], s_gs[rows.w]);
        [[unroll]] for (uint y = 0; y < 4u; y++) {
            const uint sc = 8u * tj + 4u * (hh / 2u) + y;
            const bvec4 keep = bvec4(sc <= rows.x && rows.x < L, sc <= rows.y && rows.y < L,
                                     sc <= rows.z && rows.z < L, sc <= rows.w && rows.w < L);
            vec4 x = X[4u * hh + y];
            if (decay)
                x *= exp(mix(vec4(0.0), gsi - s_gs[sc], keep));
            x = mix(vec4(0.0), x, keep);
            [[unroll]] for (uint r = 0; r < 4u; r++)
                scr[base + rows[r] * C + sc] = x[r];
        }
    }
}

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
    const bool in_lower = tj <= ti;

    vec4 X[16];
    [[unroll]] for (uint y = 0; y < 16u; y++) X[y] = vec4(0.0);
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
                const vec4 qi[2] = vec4[2](sa[(xx * C) / 4u + 2u * ti], sa[(xx * C) / 4u + 2u * ti + 1u]);
                const vec4 kj[2] = vec4[2](sb[(xx * C) / 4u + 2u * tj], sb[(xx * C) / 4u + 2u * tj + 1u]);
                if (HAS_GK) {
                    const vec4 gi[2] = vec4[2](gc4(xx, 8u * ti), gc4(xx, 8u * ti + 4u));
                    const vec4 gj[2] = vec4[2](gc4(xx, 8u * tj), gc4(xx, 8u * tj + 4u));
                    [[unroll]] for (uint hh = 0; hh < 4u; hh++) {
                        const uint ha = hh % 2u, hb = hh / 2u;
                        const uvec4 rows = uvec4(8u * ti + 4u * ha) + uvec4(0u, 1u, 2u, 3u);
                        [[unroll]] for (uint y = 0; y < 4u; y++) {
                            const bvec4 lower = lessThanEqual(uvec4(8u * tj + 4u * hb + y), rows);
                            X[4u * hh + y] += qi[ha] * kj[hb][y] * exp(mix(vec4(0.0), gi[ha] - gj[hb][y], lower));
                        }
                    }
                } else {
                    [[unroll]] for (uint hh = 0; hh < 4u; hh++)
                        [[unroll]] for (uint y = 0; y < 4u; y++)
                            X[4u * hh + y] += qi[hh % 2u] * kj[hh / 2u][y];
                }
            }
        }
    }
    store_block(chunk_row(pc.r_amat, h, c, C * C), ti, tj, L, !HAS_GK, X);

    [[unroll]] for (uint y = 0; y < 16u; y++) X[y] = vec4(0.0);
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
                const vec4 di[2] = vec4[2](sa[(xx * C) / 4u + 2u * ti], sa[(xx * C) / 4u + 2u * ti + 1u]);
                const vec4 vj[2] = vec4[2](sb[(xx * C) / 4u + 2u * tj], sb[(xx * C) / 4u + 2u * tj + 1u]);
                [[unroll]] for (uint hh = 0; hh < 4u; hh++)
                    [[unroll]] for (uint y = 0; y < 4u; y++)
                        X[4u * hh + y] += di[hh % 2u] * vj[hh / 2u][y];
            }
        }
    }
    store_block(chunk_row(pc.r_pmat, h, c, C * C), ti, tj, L, !HAS_GK && !NORMALIZE, X);
}
