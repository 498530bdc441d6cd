#version 450
// Causal linear attention, chunk form, step 1 (parallel over all chunks):
// each chunk's own state contribution  dS = (K * e^(G_last - G))^T V  (V with the ones column
// when normalizing) and its total log decay G_last (per channel with gk).
//
// Workgroup of TC = 64 threads for one (chunk, head, block of R key rows, tile of 64 value
// columns); thread j owns value column j of the tile and the R rows of the block in
// registers. The decayed keys of the block go to shared memory first (each thread stages
// vec4s of its own token, so one exp per thread and one vec4 store per four keys); then a
// loop over the chunk's tokens, unrolled at compile time, adds k_t[i] v_t[j] to the block:
// each token costs one read of v per thread straight from memory (consecutive across
// threads) and R/4 vec4 reads of keys at one address for all threads. Unrolled, those reads
// are known to be uniform: lavapipe then makes each a single load and broadcast (inside a
// loop it reads every lane separately, which costs several times more), and GPUs serve them
// as shared-memory broadcasts. Tokens past the chunk's end have zero keys.
// On lavapipe every read or write whose address differs across lanes is a loop over the
// lanes, so the kernel keeps their number low; and a barrier separates the accumulation
// from the stores of the block, which stops LLVM from sinking the whole accumulation into
// the per-lane store loop (where it ran lane by lane, in scalar code).
// Grid: x = key blocks * column tiles, y = heads, z = chunks. P0 = C (chunk size), P1 = R
// (a multiple of 4, at most TC).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

const uint C = P0;
const uint R = P1;     // key rows per workgroup
const uint TC = 64u;   // value columns per workgroup = threads

const uint KR4 = R / 4u + 1u;    // vec4s per token row of s_kd4 (one of padding: rows of
                                 // consecutive tokens start in different banks)
shared vec4 s_kd4[C * KR4];      // [t][r]: k_t[i] e^(G_last[i] - G_t[i]), 0 past the chunk
shared float s_g[C];             // log decay of each token

void main()
{
    const uint lid = gl_LocalInvocationID.x;
    const uint ntc = (VP + TC - 1u) / TC;
    const uint kt = gl_WorkGroupID.x / ntc, ct = gl_WorkGroupID.x % ntc;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    const uint c = pc.c_begin + gl_WorkGroupID.z;
    uint s, local0, b, t0, len;
    chunk_info(c, C, s, local0);
    seq_info(s, b, t0, len);
    const uint L = min(C, len - local0);
    const uint tb = t0 + local0;

    if (lid < C)
        s_g[lid] = lid < L ? log_decay_scalar(b, tb + lid, h) : 0.0;
    barrier();
    // in-chunk cumulative log decay of token lid, and of the chunk's last token (unrolled:
    // the reads of s_g are broadcasts)
    float gs_own = 0.0, glast = 0.0;
    [[unroll]] for (uint u = 0; u < C; u++) {
        glast += s_g[u];
        gs_own = u == lid % C ? glast : gs_own;
    }
    // per-channel decays: thread r sums gk of its key row from the chunk's end backwards
    float gk_all = 0.0;
    if (HAS_GK && lid < R) {
        const uint i = kt * R + lid;
        for (uint t = C; t-- > 0u;) {
            s_kd4[t * KR4 + lid / 4u][lid & 3u] = gk_all;   // sum over tokens u > t
            if (t < L && i < K)
                gk_all += log_decay_channel(b, tb + t, h, i);
        }
    }
    barrier();
    // decayed keys of the block to shared memory, unrolled and branch-free (a loop or a
    // branch around a read makes lavapipe read lane by lane): thread lid stages token lid % C,
    // four rows at a time as one vec4, with the decay of its own token; reads past the chunk
    // or K are clamped to a valid element and their products set to zero
    const uint t = lid % C;
    const float dk = exp(glast - gs_own);
    const uint krow = pc.k_base + b * pc.k_sb + (tb + min(t, L - 1u)) * pc.k_st + h * pc.k_sh;
    [[unroll]] for (uint n = 0; n < (C * R / 4u + TC - 1u) / TC; n++) {
        const uint r4 = (n * TC + lid) / C;   // TC is a multiple of C: the token is lid % C
        vec4 kv;
        [[unroll]] for (uint y = 0; y < 4u; y++) {
            const uint i = kt * R + 4u * r4 + y;
            float d = dk;
            if (HAS_GK)
                d *= exp(s_kd4[t * KR4 + r4][y]);
            const float x = LOADE(k_buf[krow + min(i, K - 1u)]) * d;
            kv[y] = t < L && i < K ? x : 0.0;
        }
        if (r4 < R / 4u)   // (t, r4) is this thread's alone: it read the gk sums it replaces
            s_kd4[t * KR4 + r4] = kv;
    }
    barrier();

    // thread j reads value column j of each token straight from memory (clamped like the keys;
    // the keys of tokens past the chunk are zero)
    const uint col = ct * TC + lid;
    const uint vcol = pc.v_base + b * pc.v_sb + tb * pc.v_st + h * pc.v_sh + min(col, V - 1u);
    float acc[R];
    [[unroll]] for (uint r = 0; r < R; r++)
        acc[r] = 0.0;
    [[unroll]] for (uint t = 0; t < C; t++) {
        const float raw = LOADE(v_buf[vcol + min(t, L - 1u) * pc.v_st]);
        const float w = NORMALIZE && col >= V ? 1.0 : raw;
        [[unroll]] for (uint r = 0; r < R; r += 4u) {
            const vec4 k4 = s_kd4[t * KR4 + r / 4u];
            acc[r] += k4.x * w;
            acc[r + 1u] += k4.y * w;
            acc[r + 2u] += k4.z * w;
            acc[r + 3u] += k4.w * w;
        }
    }
    barrier();
    [[unroll]] for (uint r = 0; r < R; r++) {
        const uint i = kt * R + r;
        if (i < K && col < VP)
            state_buf[pc.st_base + ((h * pc.nchunks + c) * K + i) * VP + col] = acc[r];
    }

    // total log decay of the chunk, written once per (chunk, head)
    if (ct == 0u && lid < R) {
        const uint d = kt * R + lid;
        if (HAS_GK) {
            if (d < K)
                decay_buf[pc.dc_base + (h * pc.nchunks + c) * KD + d] = glast + gk_all;
        } else if (kt == 0u && lid == 0u) {
            decay_buf[pc.dc_base + (h * pc.nchunks + c) * KD] = glast;
        }
    }
}
