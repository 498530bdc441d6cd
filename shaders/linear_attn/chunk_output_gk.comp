#version 450
// Causal linear attention, chunk form, step 3 with a per-channel gate gk (without:
// chunk_output.comp), parallel over all chunks: the output
//   O = scale * ( (Q * e^G) S + ((Q K^T) . D) V ),  D_ij = e^(G_i - G_j) for j <= i,
// with S the state entering the chunk (from step 2). With normalize the ones column gives the
// denominator scale * q.z + eps. Decay exponents are selected only where j <= i (masked
// entries take exponent 0 and are zeroed afterwards), never clamped: with log decays <= 0 every
// exponent used is <= 0, and positive log decays give the exact growth of the recurrence
// (overflowing to inf only where the result itself is not representable).
//
// Workgroup of 2C threads = (C/4) x 8 for one (chunk, head, tile of 64 value columns). Thread
// (ti, tj) owns a register block: rows 4ti..4ti+3, score columns CA*tj.. (CA = C/8) and value
// columns 8tj..8tj+7. Tiles in shared memory are laid out so that each of those runs is one
// or two vec4 reads: few, wide shared-memory reads per FMA is what decides speed on CPU
// implementations (lavapipe) and it suits GPUs as well.
//   phase A, over tiles of XT key channels: scores A = Q K^T (per-channel decay inside the
//            sum) and the inter-chunk term (Q e^G) S;
//   phase B: A^T goes to shared memory and O += A V over half-chunk value tiles.
// Grid: x = value tiles, y = heads, z = chunks. P0 = C (16, 32 or 64).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

const uint C = P0;
const uint NT = 2u * C;   // threads
const uint TC = 64u;      // value columns per workgroup
const uint XT = 16u;      // key channels per phase-A tile
const uint CA = C / 8u;   // score columns per thread

// phase A (vec4 units): q and k tiles [XT][C], per-channel cumulative decay [XT][C],
// state tile [XT][TC], z [XT]
const uint Q4 = 0u, K4 = XT * C / 4u, G4 = 2u * XT * C / 4u, S4 = 3u * XT * C / 4u;
const uint Z4 = S4 + XT * TC / 4u;
const uint SIZE_A = Z4 + XT / 4u;
// phase B: scores transposed [C][C] (A^T[j][i]) and half a chunk of values [C/2][TC]
const uint V4 = C * C / 4u;
const uint SIZE_B = V4 + (C / 2u) * TC / 4u;
shared vec4 sm[SIZE_A > SIZE_B ? SIZE_A : SIZE_B];
shared float s_gs[C];

void put(uint e, float x) { sm[e >> 2u][e & 3u] = x; }
float get(uint e) { return sm[e >> 2u][e & 3u]; }

void main()
{
    const uint lid = gl_LocalInvocationID.x;
    const uint ti = lid / 8u, tj = lid % 8u;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    const uint c = pc.c_begin + gl_WorkGroupID.z;
    const uint col0 = gl_WorkGroupID.x * TC;
    uint s, local0, b, t0, len;
    chunk_info(c, C, s, local0);
    seq_info(s, b, t0, len);
    const uint L = min(C, len - local0);
    const uint tb = t0 + local0;
    const uint sbase = pc.st_base + (h * pc.nchunks + c) * K * VP;

    for (uint t = lid; t < C; t += NT)
        s_gs[t] = t < L ? log_decay_scalar(b, tb + t, h) : 0.0;
    barrier();
    if (lid == 0u)
        for (uint t = 1u; t < L; t++)
            s_gs[t] += s_gs[t - 1u];

    const uvec4 rows = uvec4(4u * ti) + uvec4(0u, 1u, 2u, 3u);
    vec4 A[CA];       // A[x][a]: row 4ti+a, score column CA*tj+x
    vec4 O[8];        // O[x][a]: row 4ti+a, value column 8tj+x
    vec4 dn = vec4(0.0);
    [[unroll]] for (uint x = 0; x < CA; x++) A[x] = vec4(0.0);
    [[unroll]] for (uint x = 0; x < 8u; x++) O[x] = vec4(0.0);

    for (uint x0 = 0; x0 < K; x0 += XT) {
        barrier();
        for (uint e = lid; e < C * XT; e += NT) {
            const uint t = e % C, xx = e / C;
            const bool ok = t < L && x0 + xx < K;
            put(Q4 * 4u + e, ok ? load_q(b, tb + t, h, x0 + xx) : 0.0);
            put(K4 * 4u + e, ok ? load_k(b, tb + t, h, x0 + xx) : 0.0);
        }
        for (uint e = lid; e < XT * TC; e += NT) {
            const uint xx = e / TC, cc = col0 + e % TC;
            put(S4 * 4u + e, (x0 + xx < K && cc < V) ? state_buf[sbase + (x0 + xx) * VP + cc] : 0.0);
        }
        if (NORMALIZE && lid < XT)
            put(Z4 * 4u + lid, x0 + lid < K ? state_buf[sbase + (x0 + lid) * VP + V] : 0.0);
        if (lid < XT) {
            float run = 0.0;
            for (uint t = 0; t < C; t++) {
                if (t < L && x0 + lid < K)
                    run += log_decay_channel(b, tb + t, h, x0 + lid);
                put(G4 * 4u + lid * C + t, s_gs[t] + run);
            }
        }
        barrier();

        for (uint xx = 0; xx < XT; xx++) {
            const vec4 qi = sm[Q4 + (xx * C) / 4u + ti];
            const vec4 gi = sm[G4 + (xx * C) / 4u + ti];
            const vec4 qe = qi * exp(gi);
            float kj[CA], gj[CA];
            if (CA >= 4u) {
                [[unroll]] for (uint x = 0; x < CA; x += 4u) {
                    const vec4 k4 = sm[K4 + (xx * C + CA * tj + x) / 4u];
                    const vec4 g4 = sm[G4 + (xx * C + CA * tj + x) / 4u];
                    [[unroll]] for (uint y = 0; y < 4u; y++) { kj[x + y] = k4[y]; gj[x + y] = g4[y]; }
                }
            } else {
                [[unroll]] for (uint x = 0; x < CA; x++) {
                    kj[x] = get(K4 * 4u + xx * C + CA * tj + x);
                    gj[x] = get(G4 * 4u + xx * C + CA * tj + x);
                }
            }
            const vec4 s0 = sm[S4 + (xx * TC) / 4u + 2u * tj];
            const vec4 s1 = sm[S4 + (xx * TC) / 4u + 2u * tj + 1u];
            [[unroll]] for (uint x = 0; x < CA; x++) {
                const bvec4 lower = lessThanEqual(uvec4(CA * tj + x), rows);
                A[x] += qi * kj[x] * exp(mix(vec4(0.0), gi - gj[x], lower));
            }
            [[unroll]] for (uint x = 0; x < 4u; x++) {
                O[x] += qe * s0[x];
                O[x + 4u] += qe * s1[x];
            }
            if (NORMALIZE)
                dn += qe * get(Z4 * 4u + xx);
        }
    }

    // A^T to shared memory, masked to j <= i inside the chunk
    barrier();
    [[unroll]] for (uint x = 0; x < CA; x++) {
        const uint j = CA * tj + x;
        const vec4 v = A[x];
        const bvec4 keep = bvec4(j <= 4u * ti && j < L, j <= 4u * ti + 1u && j < L,
                                 j <= 4u * ti + 2u && j < L, j <= 4u * ti + 3u && j < L);
        sm[(j * C) / 4u + ti] = mix(vec4(0.0), v, keep);
    }

    for (uint v0 = 0; v0 < L; v0 += C / 2u) {
        barrier();
        for (uint e = lid; e < (C / 2u) * TC; e += NT) {
            const uint t = v0 + e / TC, cc = col0 + e % TC;
            put(V4 * 4u + e, (t < L && cc < V) ? load_v(b, tb + t, h, cc) : 0.0);
        }
        barrier();
        const uint tn = min(C / 2u, L - v0);
        for (uint t = 0; t < tn; t++) {
            const vec4 av = sm[((v0 + t) * C) / 4u + ti];
            const vec4 w0 = sm[V4 + (t * TC) / 4u + 2u * tj];
            const vec4 w1 = sm[V4 + (t * TC) / 4u + 2u * tj + 1u];
            [[unroll]] for (uint x = 0; x < 4u; x++) {
                O[x] += av * w0[x];
                O[x + 4u] += av * w1[x];
            }
            if (NORMALIZE)
                dn += av;
        }
    }

    [[unroll]] for (uint a = 0; a < 4u; a++) {
        const uint i = 4u * ti + a;
        if (i >= L)
            continue;
        [[unroll]] for (uint x = 0; x < 8u; x++) {
            const uint col = col0 + 8u * tj + x;
            if (col < V) {
                float y = pc.scale * O[x][a];
                if (NORMALIZE)
                    y /= pc.scale * dn[a] + pc.eps;
                store_o(b, tb + i, h, col, y);
            }
        }
    }
}
