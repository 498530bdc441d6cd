// Storage dtype of the q/k/v/o tensors, chosen at compile time with -DDTYPE=0|1|2
// (f32, f16, bf16). All arithmetic is fp32: LOADE widens, STOREE narrows.
#ifndef VKLA_DTYPE_GLSL
#define VKLA_DTYPE_GLSL

#ifndef DTYPE
#define DTYPE 0
#endif

// ELEM4 / LOADE4 / STOREE4: the same for four consecutive elements (vec4 views of a tensor)
#if DTYPE == 0
#define ELEM float
#define LOADE(x) (x)
#define STOREE(x) (x)
#define ELEM4 vec4
#define LOADE4(x) (x)
#define STOREE4(x) (x)
#elif DTYPE == 1
#extension GL_EXT_shader_16bit_storage : require
#define ELEM float16_t
#define LOADE(x) float(x)
#define STOREE(x) float16_t(x)
#define ELEM4 f16vec4
#define LOADE4(x) vec4(x)
#define STOREE4(x) f16vec4(x)
#elif DTYPE == 2
#extension GL_EXT_shader_16bit_storage : require
#define ELEM uint16_t
#define LOADE(x) uintBitsToFloat(uint(x) << 16)
#define STOREE(x) uint16_t(vkla_bf16_bits(x))
#define ELEM4 u16vec4
#define LOADE4(x) uintBitsToFloat(uvec4(x) << 16)
#define STOREE4(x) u16vec4(uvec4(vkla_bf16_bits((x).x), vkla_bf16_bits((x).y), vkla_bf16_bits((x).z), vkla_bf16_bits((x).w)))
// fp32 -> bf16 bits, round to nearest even, NaN stays NaN
uint vkla_bf16_bits(float f)
{
    uint u = floatBitsToUint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (u >> 16) | 0x40u;
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}
#else
#error "DTYPE must be 0 (f32), 1 (f16) or 2 (bf16)"
#endif

#endif
