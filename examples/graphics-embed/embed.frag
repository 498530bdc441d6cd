#version 450
// Heatmap of two vkla linear_attn layers, read straight from the storage buffers vkla wrote:
//   band 0: layer A's state S (one K x V tile per stream and head), band 1: layer B's,
//   band 2: layer A's output history (one column per frame, one pixel row per channel),
//   band 3: layer B's output history.
layout(location = 0) out vec4 color;

layout(std430, set = 0, binding = 0) readonly buffer StateA { float state_a[]; };
layout(std430, set = 0, binding = 1) readonly buffer StateB { float state_b[]; };
layout(std430, set = 0, binding = 2) readonly buffer HistA { float hist_a[]; };
layout(std430, set = 0, binding = 3) readonly buffer HistB { float hist_b[]; };

layout(push_constant) uniform Params {
    uvec2 size;        // framebuffer size in pixels
    uint nseq;         // streams (sequences)
    uint heads;
    uint kdim;
    uint vdim;
    uint hist_rows;    // rows of the output history ring
    uint frame;        // frame being drawn; its output row is frame % hist_rows
    uint state_half;   // which half of each state buffer holds this frame's ht
    uint pad;          // keeps the vec2s at 8-byte offsets, as in the C struct
    vec2 state_gain;   // colour scale of the states of layer A (x) and B (y)
    vec2 out_gain;     // colour scale of the outputs of layer A (x) and B (y)
} pc;

const vec3 background = vec3(0.05, 0.05, 0.07);
const vec3 grid = vec3(0.3);

vec3 heat(float x)
{
    float t = clamp(tanh(x), -1.0, 1.0);
    vec3 hue = t >= 0.0 ? vec3(1.0, 0.55, 0.1) : vec3(0.1, 0.55, 1.0);
    float a = abs(t);
    vec3 c = mix(background, hue, min(a / 0.75, 1.0));
    return mix(c, vec3(1.0), max(a - 0.75, 0.0) / 0.25);
}

void main()
{
    uvec2 px = uvec2(gl_FragCoord.xy);
    uint tiles = pc.nseq * pc.heads;
    uint tile = pc.size.x / tiles;             // square state tiles
    uint hist_h = (pc.size.y - 2u * tile) / 2u;
    vec3 c = grid;
    if (px.y < 2u * tile) {
        uint band = px.y / tile;               // 0: layer A, 1: layer B
        uint t = min(px.x / tile, tiles - 1u);
        uint lx = px.x - t * tile, ly = px.y - band * tile;
        if (lx >= 2u && ly >= 2u) {
            uint k = (ly - 2u) * pc.kdim / (tile - 2u);
            uint v = (lx - 2u) * pc.vdim / (tile - 2u);
            uint i = ((pc.state_half * tiles + t) * pc.kdim + k) * pc.vdim + v;
            c = band == 0u ? heat(pc.state_gain.x * state_a[i]) : heat(pc.state_gain.y * state_b[i]);
        }
    } else {
        uint y = px.y - 2u * tile;
        uint band = min(y / hist_h, 1u);       // 0: layer A outputs, 1: layer B outputs
        uint ly = y - band * hist_h;
        uint slot = min(px.x * pc.hist_rows / pc.size.x, pc.hist_rows - 1u);
        uint channels = tiles * pc.vdim;
        bool written = pc.frame >= pc.hist_rows || slot <= pc.frame;
        bool current = slot == pc.frame % pc.hist_rows;
        if (ly < 2u) {
            c = current ? vec3(1.0) : grid;
        } else if (written) {
            uint ch = min((ly - 2u) * channels / (hist_h - 2u), channels - 1u);
            uint i = slot * channels + ch;
            c = band == 0u ? heat(pc.out_gain.x * hist_a[i]) : heat(pc.out_gain.y * hist_b[i]);
        } else {
            c = vec3(0.12);
        }
    }
    color = vec4(c, 1.0);
}
