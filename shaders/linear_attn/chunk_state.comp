#version 450
// Causal linear attention, chunk form, step 1 (parallel over all chunks):
// each chunk's own state contribution  dS = (K * e^(G_last - G))^T V  (V with the ones column
// when normalizing) and its total log decay G_last (per channel with gk).
// Workgroup: a TILE x TILE block of (key row, value column); grid x = key tiles * column tiles,
// y = heads, z = chunks. P0 = C (chunk size), P1 = TILE.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

const uint C = P0;
const uint TILE = P1;

shared float s_k[C * TILE];   // k_j[i] * e^(G_last[i] - G_j[i])
shared float s_v[C * TILE];
shared float s_gs[C];         // in-chunk cumulative scalar log decay
shared float s_gc[C * TILE];  // cumulative per-channel part (gk)

void main()
{
    const uint lid = gl_LocalInvocationID.x;
    const uint li = lid / TILE, lj = lid % TILE;
    const uint ntv = (VP + TILE - 1u) / TILE;
    const uint kt = gl_WorkGroupID.x / ntv, vt = gl_WorkGroupID.x % ntv;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    const uint c = pc.c_begin + gl_WorkGroupID.z;
    uint s, local0, b, t0, len;
    chunk_info(c, C, s, local0);
    seq_info(s, b, t0, len);
    const uint L = min(C, len - local0);
    const uint tb = t0 + local0;

    // cumulative log decays inside the chunk
    for (uint j = lid; j < C; j += TILE * TILE)
        s_gs[j] = j < L ? log_decay_scalar(b, tb + j, h) : 0.0;
    barrier();
    if (lid == 0u)
        for (uint j = 1u; j < L; j++)
            s_gs[j] += s_gs[j - 1u];
    if (HAS_GK && lid < TILE) {
        uint i = kt * TILE + lid;
        float acc = 0.0;
        for (uint j = 0; j < C; j++) {
            if (j < L && i < K)
                acc += log_decay_channel(b, tb + j, h, i);
            s_gc[j * TILE + lid] = acc;
        }
    }
    barrier();

    // tiles of k (decayed to the chunk end) and v
    for (uint e = lid; e < C * TILE; e += TILE * TILE) {
        uint j = e / TILE, x = e % TILE;
        uint i = kt * TILE + x;
        float kv = 0.0;
        if (j < L && i < K) {
            float gl = s_gs[L - 1u] - s_gs[j];
            if (HAS_GK)
                gl += s_gc[(L - 1u) * TILE + x] - s_gc[j * TILE + x];
            kv = load_k(b, tb + j, h, i) * exp(gl);
        }
        s_k[e] = kv;
        uint col = vt * TILE + x;
        s_v[e] = (j < L && col < VP) ? load_v(b, tb + j, h, col) : 0.0;
    }
    barrier();

    const uint i = kt * TILE + li;
    const uint col = vt * TILE + lj;
    float acc = 0.0;
    for (uint j = 0; j < L; j++)
        acc += s_k[j * TILE + li] * s_v[j * TILE + lj];
    if (i < K && col < VP)
        state_buf[pc.st_base + ((h * pc.nchunks + c) * K + i) * VP + col] = acc;

    // total log decay of the chunk, written once per (chunk, head)
    if (vt == 0u && li == 0u) {
        uint d = kt * TILE + lj;
        if (HAS_GK) {
            if (d < K)
                decay_buf[pc.dc_base + (h * pc.nchunks + c) * KD + d] =
                    s_gs[L - 1u] + s_gc[(L - 1u) * TILE + lj];
        } else if (kt == 0u && lj == 0u) {
            decay_buf[pc.dc_base + (h * pc.nchunks + c) * KD] = s_gs[L - 1u];
        }
    }
}
