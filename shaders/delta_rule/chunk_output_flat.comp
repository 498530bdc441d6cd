#version 450
// Delta rule, chunk form, step 3 in straight-line form (the host's choice on CPU devices;
// chunk_output.comp is the tiled form for GPUs), parallel over all chunks: the output
//   O = scale * ( (Q * e^G / |q|) S + ((Q K^T) / (|q| |k|) . D) V' ),  D_ij = e^(G_i - G_j), j <= i
// with S the state entering the chunk and V' from step 2. Every exponent used is <= 0.
//
// Workgroup of TC = 64 threads for one (chunk, value head, block of R query rows, tile of 64
// value columns); thread j owns value column j of the tile and key token j of the scores.
// Every loop is unrolled and nothing branches around a read: on lavapipe a read inside a
// loop or a branch is a loop over the lanes even at one address for all threads, while in
// straight-line code a read at one address is a single load and broadcast.
//   phase 1, over key channels x: thread j adds q_i[x] S[x][j] and q_i[x] k_j[x] for the R
//            rows i of the block (state and keys read straight from memory, the query rows
//            from shared memory as vec4 broadcasts);
//   phase 2: the scaled, decayed, masked scores go to shared memory; over tokens t, thread j
//            adds A[i][t] V'_t[j].
// Reads past the chunk, V or K are clamped to a valid element: what they feed is masked or
// never stored. A barrier before the stores keeps LLVM from sinking the sums into lavapipe's
// per-lane store loop (where they would run lane by lane in scalar code).
// Grid: x = row blocks * column tiles, y = value heads, z = chunks. P0 = C, P1 = R (a
// multiple of 4 dividing C), P2 = 2 when k may be read as vec4s (else 1).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

const uint C = P0;
const uint R = P1;
const bool K_VEC4 = P2 == 2u;   // k may be read as vec4s (the host's F_K4, as a spec constant)
const uint TC = 64u;
const uint KP = (K + TC - 1u) / TC * TC;   // K padded to whole thread rows
const uint VP4 = 4u * V4;                  // floats per state row and per V' row

// [x][r] query rows of the block (phase 1), then [t][r] scores (phase 2)
shared vec4 s_m[(KP > C ? KP : C) * R / 4u];
shared float s_g[C];    // cumulative log gate of each token
shared float s_iq[C];   // 1 / |q| (1 without l2norm)

void main()
{
    const uint lid = gl_LocalInvocationID.x;
    const uint ntc = (VP4 + TC - 1u) / TC;
    const uint rb = gl_WorkGroupID.x / ntc, ct = gl_WorkGroupID.x % ntc;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    const uint c = pc.c_begin + gl_WorkGroupID.z;
    const uint hq = h / pc.group;
    uint s, local0, b, t0, len;
    chunk_info(c, C, s, local0);
    seq_info(s, b, t0, len);
    const uint L = min(C, len - local0);
    const uint tb = t0 + local0;
    const uint rec = work_rec(h, c);
    const uint i0 = rb * R;
    const uint col = ct * TC + lid;
    const uint colc = min(col, VP4 - 1u);

    // the factors of key token lid, kept, and those of every token to shared memory
    const vec4 inf = work_buf[work_info(rec) + min(lid, C - 1u)];
    const float g_own = inf.x, ik_own = inf.y;
    if (lid < C) {
        s_g[lid] = inf.x;
        s_iq[lid] = inf.z;
    }
    // query rows of the block: thread x copies channels x, x + TC, ... of four rows at a time
    [[unroll]] for (uint r4 = 0; r4 < R; r4 += 4u) {
        [[unroll]] for (uint x0 = 0; x0 < K; x0 += TC) {
            const uint x = x0 + lid;
            vec4 q4;
            [[unroll]] for (uint y = 0; y < 4u; y++)
                q4[y] = load_q(b, tb + min(i0 + r4 + y, L - 1u), hq, min(x, K - 1u));
            s_m[(x * R + r4) >> 2u] = q4;
        }
    }
    barrier();

    // phase 1: thread j reads state column j and the key of token j straight from memory
    const uint sbase = 4u * state_at(h, c) + colc;
    const uint krow = pc.k_base + b * pc.k_sb + (tb + min(lid, L - 1u)) * pc.k_st + hq * pc.k_sh;
    float O[R], A[R];
    [[unroll]] for (uint r = 0; r < R; r++) {
        O[r] = 0.0;
        A[r] = 0.0;
    }
    // (with K_VEC4 the key of token j comes four channels to a read: a quarter of the
    // per-lane read loops on lavapipe)
    vec4 k4 = vec4(0.0);
    [[unroll]] for (uint x = 0; x < K; x++) {
        const float sv = state_f[sbase + x * VP4];
        if (K_VEC4 && x % 4u == 0u)
            k4 = LOADE4(k4_buf[krow / 4u + x / 4u]);
        const float kv = K_VEC4 ? k4[x % 4u] : LOADE(k_buf[krow + x]);
        [[unroll]] for (uint r4 = 0; r4 < R; r4 += 4u) {
            const vec4 q4 = s_m[(x * R + r4) / 4u];
            [[unroll]] for (uint y = 0; y < 4u; y++) {
                O[r4 + y] += q4[y] * sv;
                A[r4 + y] += q4[y] * kv;
            }
        }
    }
    barrier();

    // scores of key token lid: scaled by the norms, decayed, masked
    [[unroll]] for (uint r4 = 0; r4 < R; r4 += 4u) {
        vec4 a4;
        [[unroll]] for (uint y = 0; y < 4u; y++) {
            const uint r = r4 + y;
            const float gi = s_g[i0 + r], iqi = s_iq[i0 + r];
            const bool keep = lid <= i0 + r && lid < L;
            const float a = A[r] * iqi * ik_own * exp(keep ? gi - g_own : 0.0);
            a4[y] = keep ? a : 0.0;
            O[r] *= exp(gi) * iqi;
        }
        if (lid < C)
            s_m[(lid * R + r4) >> 2u] = a4;
    }
    barrier();

    // phase 2: V' of token t at column j straight from the work record
    const uint ubase = 4u * work_u(rec) + colc;
    [[unroll]] for (uint t = 0; t < C; t++) {
        const float w = work_f[ubase + min(t, L - 1u) * VP4];
        [[unroll]] for (uint r4 = 0; r4 < R; r4 += 4u) {
            const vec4 a4 = s_m[(t * R + r4) / 4u];
            [[unroll]] for (uint y = 0; y < 4u; y++)
                O[r4 + y] += a4[y] * w;
        }
    }
    barrier();

    [[unroll]] for (uint r = 0; r < R; r++) {
        const uint i = i0 + r;
        if (i < L && col < V)
            store_o(b, tb + i, h, col, pc.scale * O[r]);
    }
}
