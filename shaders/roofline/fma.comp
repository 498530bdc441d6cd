#version 450
// Roofline probe: peak multiply-add throughput. Every thread runs 8 independent vec4 FMA chains
// (32 scalar chains, enough independent work to hide the FMA latency on any GPU), 4 steps per
// loop iteration: 128 FMAs = 256 FLOPs per thread and iteration. The loop count and the
// coefficients come from push constants so nothing folds at compile time; the result is stored
// only if it equals pc.never (it never does), so the kernel touches no memory.
// -DFP16=1: the same in f16 arithmetic (GL_EXT_shader_explicit_arithmetic_types_float16; the
// device must have shaderFloat16 enabled).
#if FP16
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#define SCAL float16_t
#define VEC4 f16vec4
#else
#define SCAL float
#define VEC4 vec4
#endif

layout(local_size_x_id = 0) in;

layout(push_constant) uniform Params {
    uint iters;
    float a;
    float b;
    float never;
} pc;

layout(std430, binding = 0) writeonly buffer OutB { float out_buf[]; };

#define STEP(x) x = x * va + vb

void main()
{
    const VEC4 va = VEC4(SCAL(pc.a));
    const VEC4 vb = VEC4(SCAL(pc.b));
    const float f = float(gl_LocalInvocationIndex) * (1.0 / 4096.0);
    VEC4 x0 = VEC4(vec4(f, f + 0.01, f + 0.02, f + 0.03));
    VEC4 x1 = x0 + VEC4(SCAL(0.05));
    VEC4 x2 = x0 + VEC4(SCAL(0.10));
    VEC4 x3 = x0 + VEC4(SCAL(0.15));
    VEC4 x4 = x0 + VEC4(SCAL(0.20));
    VEC4 x5 = x0 + VEC4(SCAL(0.25));
    VEC4 x6 = x0 + VEC4(SCAL(0.30));
    VEC4 x7 = x0 + VEC4(SCAL(0.35));
    for (uint i = 0u; i < pc.iters; i++) {
        STEP(x0); STEP(x1); STEP(x2); STEP(x3); STEP(x4); STEP(x5); STEP(x6); STEP(x7);
        STEP(x0); STEP(x1); STEP(x2); STEP(x3); STEP(x4); STEP(x5); STEP(x6); STEP(x7);
        STEP(x0); STEP(x1); STEP(x2); STEP(x3); STEP(x4); STEP(x5); STEP(x6); STEP(x7);
        STEP(x0); STEP(x1); STEP(x2); STEP(x3); STEP(x4); STEP(x5); STEP(x6); STEP(x7);
    }
    const VEC4 s4 = ((x0 + x1) + (x2 + x3)) + ((x4 + x5) + (x6 + x7));
    const float s = float(s4.x) + float(s4.y) + float(s4.z) + float(s4.w);
    if (s == pc.never)
        out_buf[gl_LocalInvocationIndex & 3u] = s;
}
