#version 450
// Delta rule, chunk form, step 2 as one dispatch per chunk step (with scan_vp.comp): the
// state after chunk m of each sequence,
//   S' = e^(G_last) S + KD^T V',
// written where the next chunk's state goes (state_buf), or to ht after the last chunk.
// P2 = 1 (INIT): the dispatch before the first step, which writes the state entering the
// first chunk (h0, or zeros); P2 = 2 (LAST): the last step, whose state goes to ht (a
// pipeline of its own, so that each step has one store, not two behind a runtime branch).
// The host runs these kernels only without varlen (every sequence has T >= 1 tokens and the
// same chunks); varlen calls take chunk_scan.comp. The clamps below still keep every read
// inside the sequence's records.
//
// Straight-line code, as in scan_vp.comp: thread j owns value column j of a 64-column tile
// and R state rows in registers; the decayed keys KD of the chunk (rows of the block) are
// staged in shared memory and read as broadcasts, V' is read straight from the work record,
// one value per thread and token.
// Grid: x = row blocks * column tiles, y = value heads, z = sequences.
// P0 = C, P1 = R (a multiple of 4), P2 = 0, INIT (1) or LAST (2). Step m: pc.flags >> 16.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

const uint C = P0;
const uint R = P1;
const bool INIT = P2 == 1u;
const bool LAST = P2 == 2u;
const uint TC = 64u;
const uint R4 = R / 4u;
const uint KR4 = R4 + 1u;   // vec4s per staged token row (one of padding)
const uint VP4 = 4u * V4;

shared vec4 s_kd[C * KR4];

void main()
{
    const uint lid = gl_LocalInvocationID.x;
    const uint ntc = (VP4 + TC - 1u) / TC;
    const uint kt = gl_WorkGroupID.x / ntc, ct = gl_WorkGroupID.x % ntc;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    const uint s = pc.s_begin + gl_WorkGroupID.z;
    const uint m = pc.flags >> 16;
    uint b, t0, len;
    seq_info(s, b, t0, len);
    const uint n = (len + C - 1u) / C;
    const uint first = VARLEN ? seqtab[s].z : s * ((pc.T + C - 1u) / C);
    const uint col = ct * TC + lid;
    const uint colc = min(col, VP4 - 1u);
    const uint hbase = (s * pc.HV + h) * K;

    if (INIT) {
        // h0 (or zeros) into the state entering the first chunk
        [[unroll]] for (uint r = 0; r < R; r++) {
            const uint i = min(kt * R + r, K - 1u);
            float x = 0.0;
            if (HAS_H0 && col < V)
                x = h0_buf[pc.h0_base + (hbase + i) * V + col];
            if (kt * R + r < K && col < VP4)
                state_f[4u * state_at(h, first) + i * VP4 + col] = x;
        }
        return;
    }

    const bool live = m < n;
    const uint mc = min(m, max(n, 1u) - 1u);
    const uint c = first + mc;
    const uint L = len > mc * C ? min(C, len - mc * C) : 0u;
    const uint rec = work_rec(h, c);

    // KD of the block: token t's vec4s r4 (rows 4 r4 .. of the block), unrolled, zero past
    // the chunk or K
    [[unroll]] for (uint e0 = 0; e0 < C * R4; e0 += TC) {
        const uint e = min(e0 + lid, C * R4 - 1u);
        const uint t = e / R4, r4 = e % R4;
        const uint k4 = min(kt * R4 + r4, K4 - 1u);
        const vec4 kd = work_buf[work_kd(rec) + t * K4 + k4];
        if (e0 + lid < C * R4)
            s_kd[t * KR4 + r4] = t < L && kt * R4 + r4 < K4 ? kd : vec4(0.0);
    }
    const float dl = exp(work_buf[work_info(rec) + max(L, 1u) - 1u].x);
    barrier();

    const uint ubase = 4u * work_u(rec) + colc;
    float acc[R];
    [[unroll]] for (uint r = 0; r < R; r++)
        acc[r] = 0.0;
    [[unroll]] for (uint t = 0; t < C; t++) {
        const float w = work_f[ubase + min(t, L - 1u) * VP4];   // (rows past the chunk: zero keys)
        [[unroll]] for (uint r4 = 0; r4 < R4; r4++) {
            const vec4 k4 = s_kd[t * KR4 + r4];
            acc[4u * r4] += k4.x * w;
            acc[4u * r4 + 1u] += k4.y * w;
            acc[4u * r4 + 2u] += k4.z * w;
            acc[4u * r4 + 3u] += k4.w * w;
        }
    }
    // a barrier between the sums and the stores keeps LLVM (lavapipe) from sinking the sums
    // into the per-lane store loops, where they would run lane by lane in scalar code
    barrier();

    const uint src = 4u * state_at(h, c) + colc;
    const uint dst = 4u * state_at(h, c + 1u) + col;   // (not used by LAST)
    [[unroll]] for (uint r = 0; r < R; r++) {
        const uint i = kt * R + r;
        const float x = dl * state_f[src + min(i, K - 1u) * VP4] + acc[r];
        if (!LAST && live && i < K && col < VP4)
            state_f[dst + i * VP4] = x;
        if (LAST && HAS_HT && live && i < K && col < V)
            ht_buf[pc.ht_base + (hbase + i) * V + col] = x;
    }
}
