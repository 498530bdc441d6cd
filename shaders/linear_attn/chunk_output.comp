#version 450
// Causal linear attention, chunk form, step 3 without a per-channel gate (with gk:
// chunk_output_gk.comp), parallel over all chunks: the output
//   O = scale * ( (Q e^G) S + ((Q K^T) . D) V ),  D_ij = e^(G_i - G_j) for j <= i,
// with S the state entering the chunk (from step 2). With normalize the denominator
// scale * (q e^G) . z + scale * sum_j A_ij + eps comes from z (state column V) and the row
// sums of the decayed scores. Decay exponents are selected only where j <= i (masked entries
// take exponent 0 and are zeroed afterwards), never clamped: with log decays <= 0 every
// exponent used is <= 0, and positive log decays give the exact growth of the recurrence.
//
// Workgroup of TC = 64 threads for one (chunk, head, block of R query rows, tile of 64 value
// columns); thread j owns value column j of the tile and key token j of the scores. Every
// loop is unrolled at compile time and nothing branches around a read: on lavapipe a read
// inside a loop or a branch is done lane by lane even at one address for all threads, while
// in straight-line code a read at one address is a single load and broadcast (GPUs serve such
// reads as shared-memory broadcasts anyway). Fewer branches also keep the compile short.
//   phase 1, over key channels x: thread j adds q_i[x] S[x][j] and q_i[x] k_j[x] for the R
//            rows i of the block (state and keys read straight from memory, the query rows
//            from shared memory as vec4 broadcasts);
//   phase 2: the decayed, masked scores go to shared memory; over tokens s, thread j adds
//            A[i][s] v_s[j].
// Each step costs one or two per-thread reads and R/4 broadcast vec4 reads per R or 2R FMAs.
// Grid: x = row blocks * column tiles, y = heads, z = chunks. P0 = C (16, 32 or 64), P1 = R
// (a multiple of 4 dividing C).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

const uint C = P0;
const uint R = P1;
const uint TC = 64u;   // threads = value columns per workgroup (>= C)
const uint KP = (K + TC - 1u) / TC * TC;   // K padded to whole thread rows

// [x][r] query rows of the block (phase 1), then [s][r] decayed masked scores (phase 2)
shared vec4 s_m[(KP > C ? KP : C) * R / 4u];
shared float s_g[TC];   // log decay of each token, then its in-chunk cumulative sum
shared float s_z[NORMALIZE ? KP : 1u];

void main()
{
    const uint lid = gl_LocalInvocationID.x;
    const uint ntc = (V + TC - 1u) / TC;
    const uint rb = gl_WorkGroupID.x / ntc, ct = gl_WorkGroupID.x % ntc;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    const uint c = pc.c_begin + gl_WorkGroupID.z;
    uint s, local0, b, t0, len;
    chunk_info(c, C, s, local0);
    seq_info(s, b, t0, len);
    const uint L = min(C, len - local0);
    const uint tb = t0 + local0;
    const uint i0 = rb * R;
    const uint col = ct * TC + lid;
    // Reads past the chunk, V or K are clamped to the last valid token, column or channel
    // instead of branched around: what they feed is masked (scores of key tokens >= L) or
    // never stored (rows >= L, columns >= V), and straight-line code without branches is
    // what lavapipe compiles and runs fastest.
    const uint colc = min(col, V - 1u);
    const uint sbase = pc.st_base + (h * pc.nchunks + c) * K * VP;

    s_g[lid] = lid < L ? log_decay_scalar(b, tb + lid, h) : 0.0;
    // query rows of the block: thread x copies channels x, x + TC, ... of each row, four rows
    // to one vec4 store
    [[unroll]] for (uint r4 = 0; r4 < R; r4 += 4u) {
        [[unroll]] for (uint x0 = 0; x0 < K; x0 += TC) {
            const uint x = x0 + lid;
            vec4 q4;
            [[unroll]] for (uint y = 0; y < 4u; y++) {
                const uint qrow = pc.q_base + b * pc.q_sb + (tb + min(i0 + r4 + y, L - 1u)) * pc.q_st + h * pc.q_sh;
                q4[y] = LOADE(q_buf[qrow + min(x, K - 1u)]);
            }
            s_m[(x * R + r4) >> 2u] = q4;
        }
    }
    if (NORMALIZE) {
        [[unroll]] for (uint x0 = 0; x0 < K; x0 += TC)
            s_z[x0 + lid] = state_buf[sbase + min(x0 + lid, K - 1u) * VP + V];
    }
    barrier();
    // in-chunk cumulative log decay of token lid
    float gs = 0.0, run = 0.0;
    [[unroll]] for (uint t = 0; t < C; t++) {
        run += s_g[t];
        gs = t == lid ? run : gs;
    }

    // phase 1: thread j reads state column j and the keys of token j straight from memory
    const uint krow = pc.k_base + b * pc.k_sb + (tb + min(lid, L - 1u)) * pc.k_st + h * pc.k_sh;
    float O[R], A[R], dn[R];
    [[unroll]] for (uint r = 0; r < R; r++) {
        O[r] = 0.0;
        A[r] = 0.0;
        dn[r] = 0.0;
    }
    // (with K_VEC4 the key of token j comes four channels to a read: a quarter of the
    // per-lane read loops on lavapipe)
    vec4 k4 = vec4(0.0);
    [[unroll]] for (uint x = 0; x < K; x++) {
        const float sv = state_buf[sbase + x * VP + colc];
        if (K_VEC4 && x % 4u == 0u)
            k4 = LOADE4(k4_buf[krow / 4u + x / 4u]);
        const float kv = K_VEC4 ? k4[x % 4u] : LOADE(k_buf[krow + x]);
        const float zx = NORMALIZE ? s_z[x] : 0.0;
        [[unroll]] for (uint r4 = 0; r4 < R; r4 += 4u) {
            const vec4 q4 = s_m[(x * R + r4) / 4u];
            [[unroll]] for (uint y = 0; y < 4u; y++) {
                O[r4 + y] += q4[y] * sv;
                A[r4 + y] += q4[y] * kv;
                if (NORMALIZE)
                    dn[r4 + y] += q4[y] * zx;
            }
        }
    }
    barrier();
    s_g[lid] = gs;
    barrier();

    // decayed scores of key token lid; the inter-chunk term decays by e^(G_i)
    [[unroll]] for (uint r4 = 0; r4 < R; r4 += 4u) {
        vec4 a4;
        [[unroll]] for (uint y = 0; y < 4u; y++) {
            const uint r = r4 + y;
            const float gi = s_g[i0 + r];
            const bool keep = lid <= i0 + r && lid < L;
            const float a = A[r] * exp(keep ? gi - gs : 0.0);
            a4[y] = keep ? a : 0.0;
            const float ei = exp(gi);
            O[r] *= ei;
            dn[r] *= ei;
        }
        if (lid < C)
            s_m[(lid * R + r4) >> 2u] = a4;
    }
    barrier();

    // phase 2: values of token t at column j straight from memory
    const uint vcol = pc.v_base + b * pc.v_sb + tb * pc.v_st + h * pc.v_sh + colc;
    [[unroll]] for (uint t = 0; t < C; t++) {
        const float w = LOADE(v_buf[vcol + min(t, L - 1u) * pc.v_st]);
        [[unroll]] for (uint r4 = 0; r4 < R; r4 += 4u) {
            const vec4 a4 = s_m[(t * R + r4) / 4u];
            [[unroll]] for (uint y = 0; y < 4u; y++) {
                O[r4 + y] += a4[y] * w;
                if (NORMALIZE)
                    dn[r4 + y] += a4[y];
            }
        }
    }

    // a barrier before the stores keeps LLVM (lavapipe) from sinking the accumulation of O
    // into the per-lane store loop, where it would run lane by lane in scalar code
    barrier();
    [[unroll]] for (uint r = 0; r < R; r++) {
        const uint i = i0 + r;
        if (i < L && col < V) {
            float y = pc.scale * O[r];
            if (NORMALIZE)
                y /= pc.scale * dn[r] + pc.eps;
            store_o(b, tb + i, h, col, y);
        }
    }
}
