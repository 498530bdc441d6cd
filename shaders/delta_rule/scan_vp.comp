#version 450
// Delta rule, chunk form, step 2 as one dispatch per chunk step (the host's choice on CPU
// devices; chunk_scan.comp runs all steps in one dispatch): for chunk m of each sequence,
//   V' = U - W S   (replaces U in the work record)
// with S the state entering the chunk (state_buf, written by scan_state.comp). The next
// dispatch, scan_state.comp, forms the state after the chunk from S and V'.
//
// Straight-line code: the step loop lives on the host, so no loop or branch surrounds a read
// here. On lavapipe a read at one address for all lanes is then a single load and broadcast,
// and every other read a loop over the lanes; this kernel keeps those few (one state value
// per thread and channel, feeding R multiply-adds) and broadcasts W.
// Workgroup of TC = 64 threads for one (sequence, value head, block of R chunk rows, tile of
// 64 value columns); thread j owns value column j of the tile and the R rows in registers.
// The W rows of the block are staged in shared memory as vec4s (read as broadcasts).
// The host runs it only without varlen (scan_state.comp says why); sequences with fewer than
// m + 1 chunks would compute on their last chunk and store nothing.
// Grid: x = row blocks * column tiles, y = value heads, z = sequences.
// P0 = C, P1 = R (a multiple of 4 dividing C). Step m: pc.flags >> 16.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

const uint C = P0;
const uint R = P1;
const uint TC = 64u;
const uint WR4 = K4 + 1u;   // vec4s per staged W row (one of padding against bank conflicts)
const uint VP4 = 4u * V4;   // floats per state row and per U row

shared vec4 s_w[R * WR4];

void main()
{
    const uint lid = gl_LocalInvocationID.x;
    const uint ntc = (VP4 + TC - 1u) / TC;
    const uint rb = gl_WorkGroupID.x / ntc, ct = gl_WorkGroupID.x % ntc;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    const uint s = pc.s_begin + gl_WorkGroupID.z;
    const uint m = pc.flags >> 16;
    uint b, t0, len;
    seq_info(s, b, t0, len);
    const uint n = (len + C - 1u) / C;
    const bool live = m < n;
    const uint mc = min(m, max(n, 1u) - 1u);
    const uint c = (VARLEN ? seqtab[s].z : s * ((pc.T + C - 1u) / C)) + mc;
    const uint L = len > mc * C ? min(C, len - mc * C) : 0u;
    const uint rec = work_rec(h, c);
    const uint i0 = rb * R;
    const uint col = ct * TC + lid;
    const uint colc = min(col, VP4 - 1u);

    // the W rows of the block: R * K4 vec4s, unrolled, clamped to the chunk's rows (rows past
    // the chunk give V' rows that are never stored)
    [[unroll]] for (uint e0 = 0; e0 < R * K4; e0 += TC) {
        const uint e = min(e0 + lid, R * K4 - 1u);
        const uint r = e / K4, x4 = e % K4;
        const vec4 w = work_buf[work_w(rec) + min(i0 + r, C - 1u) * K4 + x4];
        if (e0 + lid < R * K4)
            s_w[r * WR4 + x4] = w;
    }
    barrier();

    const uint sbase = 4u * state_at(h, c) + colc;
    float acc[R];
    [[unroll]] for (uint r = 0; r < R; r++)
        acc[r] = 0.0;
    [[unroll]] for (uint x4 = 0; x4 < K4; x4++) {
        float sv[4];
        [[unroll]] for (uint y = 0; y < 4u; y++)
            sv[y] = state_f[sbase + min(4u * x4 + y, K - 1u) * VP4];
        [[unroll]] for (uint r = 0; r < R; r++) {
            const vec4 w = s_w[r * WR4 + x4];
            [[unroll]] for (uint y = 0; y < 4u; y++)
                if (4u * x4 + y < K)   // compile-time: W's padding channels are skipped
                    acc[r] += w[y] * sv[y];
        }
    }
    // a barrier between the sums and the stores keeps LLVM (lavapipe) from sinking the sums
    // into the per-lane store loop, where they would run lane by lane in scalar code
    barrier();

    const uint ubase = 4u * work_u(rec) + colc;
    [[unroll]] for (uint r = 0; r < R; r++) {
        const uint i = i0 + r;
        const uint ui = ubase + min(i, C - 1u) * VP4;
        const float vp = work_f[ui] - acc[r];
        if (live && i < L && col < VP4)
            work_f[ui] = vp;
    }
}
