#version 450
// Causal linear attention, chunk form, step 1 (parallel over all chunks):
// each chunk's own state contribution  dS = (K * e^(G_last - G))^T V  (V with the ones column
// when normalizing) and its total log decay G_last (per channel with gk).
//
// Workgroup of TC = 64 threads for one (chunk, head, block of R key rows, tile of 64 value
// columns); thread j owns value column j of the tile and the R rows of the block in
// registers. The decayed keys of the block and the values of the tile go to shared memory
// first; then a loop over the chunk's tokens, unrolled at compile time, adds k_t[i] v_t[j]
// to the block: each token costs one read of v per thread (consecutive across threads) and
// R/4 vec4 reads of keys at one address for all threads. Unrolled, those reads are known to
// be uniform: lavapipe then makes each a single load and broadcast (inside a loop it reads
// every lane separately, which costs several times more), and GPUs serve them as
// shared-memory broadcasts. Tokens past the chunk's end have zero keys and values.
// Grid: x = key blocks * column tiles, y = heads, z = chunks. P0 = C (chunk size), P1 = R
// (a multiple of 4, at most TC).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

const uint C = P0;
const uint R = P1;     // key rows per workgroup
const uint TC = 64u;   // value columns per workgroup = threads

shared vec4 s_kd4[C * R / 4u];   // [t][r]: k_t[i] e^(G_last[i] - G_t[i]), 0 past the chunk
shared float s_g[C];             // log decay of each token
shared float s_gs[C];            // in-chunk cumulative scalar log decay
shared float s_v[C * TC];        // [t][j] values of the tile

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
    float gs = 0.0, glast = 0.0;
    [[unroll]] for (uint t = 0; t < C; t++) {
        glast += s_g[t];
        gs = t == lid ? glast : gs;
    }
    if (lid < C)
        s_gs[lid] = gs;
    // per-channel decays: thread r sums gk of its key row from the chunk's end backwards
    float gk_all = 0.0;
    if (HAS_GK && lid < R) {
        const uint i = kt * R + lid;
        for (uint t = C; t-- > 0u;) {
            s_kd4[(t * R + lid) >> 2u][lid & 3u] = gk_all;   // sum over tokens u > t
            if (t < L && i < K)
                gk_all += log_decay_channel(b, tb + t, h, i);
        }
    }
    barrier();
    // staging, unrolled (a loop would make every read a loop over the lanes)
    [[unroll]] for (uint n = 0; n < C; n++) {
        const uint e = n * TC + lid, cc = ct * TC + lid;
        s_v[e] = n < L && cc < VP ? load_v(b, tb + n, h, cc) : 0.0;
    }
    [[unroll]] for (uint n = 0; n < C * R / TC; n++) {
        const uint e = n * TC + lid;
        const uint t = e / R, i = kt * R + e % R;
        float kv = 0.0;
        if (t < L && i < K) {
            float gl = glast - s_gs[t];
            if (HAS_GK)
                gl += s_kd4[e >> 2u][e & 3u];
            kv = load_k(b, tb + t, h, i) * exp(gl);
        }
        s_kd4[e >> 2u][e & 3u] = kv;
    }
    barrier();

    const uint col = ct * TC + lid;
    float acc[R];
    [[unroll]] for (uint r = 0; r < R; r++)
        acc[r] = 0.0;
    [[unroll]] for (uint t = 0; t < C; t++) {
        const float w = s_v[t * TC + lid];
        [[unroll]] for (uint r = 0; r < R; r += 4u) {
            const vec4 k4 = s_kd4[(t * R + r) / 4u];
            acc[r] += k4.x * w;
            acc[r + 1u] += k4.y * w;
            acc[r + 2u] += k4.z * w;
            acc[r + 3u] += k4.w * w;
        }
    }
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
