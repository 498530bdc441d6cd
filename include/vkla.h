/*
 * vkla — linear-attention operators on any Vulkan device.
 *
 * The whole public API. Everything hangs off a vkla_context; the library keeps no process-global
 * state, never prints unless a message callback is given, and never exits or aborts.
 *
 * Vulkan headers: include <vulkan/vulkan.h> (or volk.h) before this header if you use them; if
 * neither was included this header includes <vulkan/vulkan_core.h> for the handle types.
 */
#ifndef VKLA_H_
#define VKLA_H_

#include <stddef.h>
#include <stdint.h>

#if !defined(VULKAN_CORE_H_)
#include <vulkan/vulkan_core.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && defined(VKLA_SHARED_BUILD)
#define VKLA_API __declspec(dllexport)
#elif defined(__GNUC__)
#define VKLA_API __attribute__((visibility("default")))
#else
#define VKLA_API
#endif

#define VKLA_VERSION_MAJOR 0
#define VKLA_VERSION_MINOR 1
#define VKLA_VERSION_PATCH 0

/* ---------------------------------------------------------------------------------------------
 * Results
 * ------------------------------------------------------------------------------------------- */
typedef enum vkla_result {
    VKLA_SUCCESS = 0,
    VKLA_ERROR_NULL_POINTER = -1,      /* a required pointer or tensor is missing */
    VKLA_ERROR_INVALID_ARGUMENT = -2,  /* an option out of range (chunk size, eps, form...) */
    VKLA_ERROR_SHAPE_MISMATCH = -3,    /* tensor shapes do not agree with each other */
    VKLA_ERROR_DTYPE_MISMATCH = -4,    /* a tensor has a dtype the op does not take there */
    VKLA_ERROR_UNSUPPORTED = -5,       /* valid request this device/build cannot do (K > limit...) */
    VKLA_ERROR_BAD_SEQLENS = -6,       /* cu_seqlens not 0 = c0 <= c1 <= ... = T */
    VKLA_ERROR_OUT_OF_RANGE = -7,      /* a view reaches past the end of its buffer */
    VKLA_ERROR_SCRATCH_TOO_SMALL = -8, /* caller scratch smaller than the size query says */
    VKLA_ERROR_NO_VULKAN = -9,         /* the Vulkan loader could not be loaded */
    VKLA_ERROR_NO_DEVICE = -10,        /* no (matching) device */
    VKLA_ERROR_OUT_OF_MEMORY = -11,    /* host or device allocation failed */
    VKLA_ERROR_DEVICE_LOST = -12,
    VKLA_ERROR_VULKAN = -13,           /* another Vulkan call failed; the message names it */
    VKLA_ERROR_BAD_PIPELINE_CACHE = -14
} vkla_result;

/* Static text for a result code ("VKLA_ERROR_SHAPE_MISMATCH: ..."). Never NULL. */
VKLA_API const char *vkla_result_string(vkla_result r);

typedef struct vkla_context vkla_context;
typedef struct vkla_buffer vkla_buffer;

/* The message of the last failed call on this context, naming what was wrong; "" if none. */
VKLA_API const char *vkla_last_error(const vkla_context *ctx);

/* ---------------------------------------------------------------------------------------------
 * Data types and tensor views
 * ------------------------------------------------------------------------------------------- */
typedef enum vkla_dtype {
    VKLA_DTYPE_F32 = 0,
    VKLA_DTYPE_F16 = 1,
    VKLA_DTYPE_BF16 = 2,
    VKLA_DTYPE_I32 = 3
} vkla_dtype;

VKLA_API const char *vkla_dtype_name(vkla_dtype d);
VKLA_API size_t vkla_dtype_size(vkla_dtype d);

/* Convert n elements between f32, f16 and bf16 (round to nearest even). Host side helper. */
VKLA_API vkla_result vkla_convert(void *dst, vkla_dtype dst_dtype, const void *src,
                                  vkla_dtype src_dtype, size_t n);

#define VKLA_MAX_DIMS 4

/*
 * A view into a buffer: buffer + byte offset + dtype + shape + strides (in elements).
 * The last dimension is always contiguous. A stride of 0 means "packed" (the product of the
 * later dimensions), so a zero-initialized strides[] describes a contiguous tensor. Strides of
 * the leading dimensions let q, k and v be views into one fused projection buffer.
 * A tensor whose buffer is NULL is "absent" (for optional inputs and outputs).
 */
typedef struct vkla_tensor {
    vkla_buffer *buffer;
    uint64_t offset;                  /* bytes; a multiple of the element size */
    vkla_dtype dtype;
    uint32_t ndim;
    uint64_t shape[VKLA_MAX_DIMS];
    uint64_t strides[VKLA_MAX_DIMS];  /* elements; 0 = packed; strides[ndim-1] must be 0 or 1 */
} vkla_tensor;

/* Convenience: a contiguous view. */
VKLA_API vkla_tensor vkla_tensor_make(vkla_buffer *buf, uint64_t offset, vkla_dtype dtype,
                                      uint32_t ndim, const uint64_t *shape);

/* ---------------------------------------------------------------------------------------------
 * Contexts
 * ------------------------------------------------------------------------------------------- */
typedef enum vkla_message_severity {
    VKLA_MESSAGE_INFO = 0,
    VKLA_MESSAGE_WARNING = 1,
    VKLA_MESSAGE_ERROR = 2,
    VKLA_MESSAGE_VALIDATION = 3 /* a message of the Vulkan validation layers */
} vkla_message_severity;

typedef void (*vkla_message_fn)(void *user, vkla_message_severity severity, const char *text);

/* Standalone context: vkla loads Vulkan itself, makes its own instance, device and queue. */
typedef struct vkla_context_desc {
    /* Device: NULL = best (discrete > integrated > virtual > CPU), else an index ("1") or a
     * case-insensitive substring of the device name ("llvmpipe"). The environment variable
     * VKLA_DEVICE is used when this is NULL. */
    const char *device;
    /* Enable VK_LAYER_KHRONOS_validation (also env VKLA_VALIDATION=1). Messages go to
     * message_fn with VKLA_MESSAGE_VALIDATION and are counted (vkla_validation_message_count). */
    int validation;
    int sync_validation;            /* also turn on synchronization validation */
    vkla_message_fn message_fn;     /* optional; vkla prints nothing without it */
    void *message_user;
    const void *pipeline_cache_data; /* optional initial VkPipelineCache contents */
    size_t pipeline_cache_size;
} vkla_context_desc;

/* On failure *out is NULL and the message naming the problem goes to desc->message_fn. */
VKLA_API vkla_result vkla_context_create(const vkla_context_desc *desc, vkla_context **out);

/*
 * External context: built on the application's own instance, device and queue.
 * vkla loads its own function table from the two proc-address functions given here and never
 * touches the loader's or volk's globals. enabled_features is the VkPhysicalDeviceFeatures2
 * chain the device was created with (may be NULL: then only core 1.1 behaviour without
 * optional features is assumed). Use vkla_device_requirements() to learn what to enable.
 * queue must support compute; vkla only submits to it from vkla_*_run / buffer upload calls,
 * never from the record path.
 */
typedef struct vkla_external_desc {
    VkInstance instance;
    VkPhysicalDevice physical_device;
    VkDevice device;
    uint32_t queue_family_index;
    VkQueue queue;
    PFN_vkGetInstanceProcAddr get_instance_proc_addr;
    PFN_vkGetDeviceProcAddr get_device_proc_addr; /* optional: looked up from the instance */
    uint32_t api_version;                         /* the instance's apiVersion (>= 1.1) */
    const char *const *enabled_extensions;
    uint32_t enabled_extension_count;
    const VkPhysicalDeviceFeatures2 *enabled_features;
    vkla_message_fn message_fn;
    void *message_user;
    const void *pipeline_cache_data;
    size_t pipeline_cache_size;
} vkla_external_desc;

VKLA_API vkla_result vkla_context_create_external(const vkla_external_desc *desc,
                                                  vkla_context **out);

/* Destroys everything the context created. External buffers and the app's device stay.
 * For an external context the app must make sure no command buffer recorded with it is still
 * pending (vkla does not wait on the app's queue). */
VKLA_API void vkla_context_destroy(vkla_context *ctx);

/* What a host application should enable on its VkDevice for vkla's fastest paths. */
#define VKLA_MAX_REQUIRED_EXTENSIONS 8
typedef struct vkla_device_requirements {
    uint32_t min_api_version;                       /* VK_API_VERSION_1_1 */
    uint32_t extension_count;                       /* those the device supports */
    const char *extensions[VKLA_MAX_REQUIRED_EXTENSIONS];
    /* Feature bits to turn on (only those the device supports are set to 1). */
    int storage_buffer_16bit_access;                /* VkPhysicalDevice16BitStorageFeatures */
    int shader_float16;                             /* VkPhysicalDeviceShaderFloat16Int8Features */
    int shader_int8;
    int subgroup_size_control;                      /* VkPhysicalDeviceSubgroupSizeControlFeatures */
    int compute_full_subgroups;
    int host_query_reset;
} vkla_device_requirements;

VKLA_API vkla_result vkla_device_requirements_query(VkInstance instance,
                                                    VkPhysicalDevice physical_device,
                                                    PFN_vkGetInstanceProcAddr gipa,
                                                    vkla_device_requirements *out);

/* Device information and the kernel variants vkla chose. */
typedef struct vkla_device_info {
    char name[256];
    uint32_t vendor_id, device_id;
    uint32_t device_type;                 /* VkPhysicalDeviceType */
    char driver_name[256];
    char driver_info[256];
    uint32_t driver_version;
    uint32_t api_version;
    uint32_t subgroup_size;
    uint32_t subgroup_min_size, subgroup_max_size;
    int subgroup_arithmetic;              /* subgroupAdd in compute shaders */
    int subgroup_clustered;
    uint32_t max_shared_memory;           /* bytes per workgroup */
    uint32_t max_workgroup_invocations;
    uint64_t max_storage_buffer_range;
    uint64_t min_storage_buffer_offset_alignment;
    int fp16_storage;                     /* storageBuffer16BitAccess (f16/bf16 tensors) */
    int fp16_arithmetic;                  /* shaderFloat16 */
    int bf16_arithmetic;                  /* VK_KHR_shader_bfloat16 style support */
    int int8_arithmetic;                  /* shaderInt8 */
    int cooperative_matrix;               /* VK_KHR_cooperative_matrix or NV */
    int push_descriptor;
    double timestamp_period_ns;
    uint32_t timestamp_valid_bits;
    uint64_t device_local_bytes;
    char variant[128];                    /* e.g. "subgroup=on storage16=on" */
} vkla_device_info;

VKLA_API vkla_result vkla_context_device_info(vkla_context *ctx, vkla_device_info *out);

/* Devices visible to a fresh instance (for tools); fills up to *count entries. */
VKLA_API vkla_result vkla_enumerate_devices(vkla_device_info *infos, uint32_t *count);

/* The device's own roofline, measured on the context's queue with GPU timestamps: peak
 * multiply-add throughput (a kernel of many independent FMA chains per thread, 2 FLOPs per FMA)
 * and the bandwidth of a large buffer-to-buffer copy (vec4 loads and stores). Takes well under
 * a second on a GPU, a few seconds on a CPU device; the result does not change for a context,
 * so callers can keep it. Nothing is cached by the library. */
typedef struct vkla_roofline {
    double fma_f32_gflops;        /* f32 FMA throughput, GFLOP/s */
    double fma_f16_gflops;        /* f16 FMA throughput (needs shaderFloat16 on the context),
                                   * 0 when not measured */
    double copy_gbs;              /* copy bandwidth: (bytes read + bytes written) / s / 1e9 */
    uint64_t copy_bytes;          /* size of the buffer copied */
    uint32_t fma_workgroups;      /* launch the FMA probe settled on */
    uint32_t fma_local_size;
    double fma_time_us, copy_time_us; /* best GPU time of one probe dispatch (of 7) */
} vkla_roofline;

VKLA_API vkla_result vkla_device_roofline(vkla_context *ctx, vkla_roofline *out);

/* Number of validation messages seen since the context was created (validation contexts):
 * validation and performance warnings and errors, and errors of any type. General warnings
 * (the loader's notes, e.g. on VK_INSTANCE_LAYERS) go to message_fn as VKLA_MESSAGE_INFO and
 * are not counted. */
VKLA_API uint32_t vkla_validation_message_count(const vkla_context *ctx);

/* Pipeline cache: call with data NULL to get the size, then with a buffer. */
VKLA_API vkla_result vkla_pipeline_cache_get(vkla_context *ctx, void *data, size_t *size);

/* Access to the context's Vulkan objects (for tools and apps that share the device). */
VKLA_API VkDevice vkla_context_vk_device(const vkla_context *ctx);
VKLA_API VkQueue vkla_context_vk_queue(const vkla_context *ctx);
VKLA_API uint32_t vkla_context_queue_family(const vkla_context *ctx);

/* Scratch bound of the calls that can run as pieces of T (linear_attn and delta_rule, forward
 * and backward; docs/long-sequences.md): a call whose scratch would pass `bytes` runs as pieces
 * whose scratch stays within it (never beyond maxStorageBufferRange - 256 either), so
 * vkla_X_scratch_size never asks for more. The default is 1 GiB, or the environment variable
 * VKLA_MAX_SCRATCH (bytes) read when the context is made. bytes = 0 restores that default;
 * other values below 4096 are refused (INVALID_ARGUMENT). Applies to the calls and size
 * queries made after it; a call already recorded keeps its layout. */
VKLA_API vkla_result vkla_context_set_scratch_limit(vkla_context *ctx, uint64_t bytes);
VKLA_API uint64_t vkla_context_scratch_limit(const vkla_context *ctx);

/* ---------------------------------------------------------------------------------------------
 * Buffers
 * ------------------------------------------------------------------------------------------- */

/* A device-local storage buffer owned by the context (usage: storage, transfer src and dst). */
VKLA_API vkla_result vkla_buffer_create(vkla_context *ctx, uint64_t size, vkla_buffer **out);

/* Wrap an application VkBuffer (created on the context's device). offset/size select the part
 * vkla may touch. It needs VK_BUFFER_USAGE_STORAGE_BUFFER_BIT, and TRANSFER_DST_BIT when used
 * as scratch or with upload. vkla never frees it. */
VKLA_API vkla_result vkla_buffer_wrap(vkla_context *ctx, VkBuffer buffer, uint64_t offset,
                                      uint64_t size, vkla_buffer **out);

VKLA_API void vkla_buffer_destroy(vkla_context *ctx, vkla_buffer *buf);
VKLA_API uint64_t vkla_buffer_size(const vkla_buffer *buf);
VKLA_API VkBuffer vkla_buffer_vk(const vkla_buffer *buf);

/* Blocking copies between host memory and a context buffer (staging when not host-visible).
 * Wrapped buffers need TRANSFER_SRC/DST usage for these. */
VKLA_API vkla_result vkla_buffer_upload(vkla_context *ctx, vkla_buffer *buf, uint64_t offset,
                                        const void *data, uint64_t size);
VKLA_API vkla_result vkla_buffer_download(vkla_context *ctx, vkla_buffer *buf, uint64_t offset,
                                          void *data, uint64_t size);
VKLA_API vkla_result vkla_buffer_fill(vkla_context *ctx, vkla_buffer *buf, uint64_t offset,
                                      uint64_t size, uint32_t word);

/* ---------------------------------------------------------------------------------------------
 * Ops
 *
 * Every op has an args struct (zero-initialize it, then set fields: zero means "default") and
 * four calls:
 *   vkla_X_run(ctx, args)              record, submit on the context queue, wait.
 *   vkla_X_record(ctx, cmd, args)      append to the caller's command buffer; never submits,
 *                                      waits, or allocates command buffers.
 *   vkla_X_scratch_size(ctx, args, &n) bytes of scratch the op needs (0 if none).
 *   vkla_bench_X(ctx, args, warmup, reps, times_us)  GPU-timestamped repetitions.
 *
 * Scratch: _run uses args->scratch when given, else the context's own. _record needs
 * args->scratch (usage STORAGE | TRANSFER_DST) whenever the size query says > 0.
 *
 * Barrier contract of _record:
 *   entry: the caller makes its writes to the inputs available to COMPUTE_SHADER reads
 *          (src = its stage/access, dst = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT /
 *          VK_ACCESS_SHADER_READ_BIT), and orders earlier reads of the outputs before
 *          compute-shader writes. vkla itself orders earlier vkla work on the same scratch.
 *   exit:  outputs are written by COMPUTE_SHADER with SHADER_WRITE access; the caller adds a
 *          barrier from (COMPUTE_SHADER, SHADER_WRITE) to its consumer before using them.
 * Inside the op vkla issues only the compute->compute and transfer->compute barriers it needs.
 *
 * cu_seqlens is a host array (FlashAttention style: N+1 int32 offsets, c0 = 0, cN = T, with
 * B = 1): vkla validates it and writes the sequence tables into scratch with vkCmdUpdateBuffer.
 * ------------------------------------------------------------------------------------------- */
typedef enum vkla_form {
    VKLA_FORM_DEFAULT = 0,   /* chunk */
    VKLA_FORM_CHUNK = 1,
    VKLA_FORM_RECURRENT = 2, /* causal ops: one step per token; the decode step */
    VKLA_FORM_ATTN = 3,      /* lion: tiled T x T */
    VKLA_FORM_RNN = 4        /* lion: forward and backward scans */
} vkla_form;

VKLA_API const char *vkla_form_name(vkla_form f);

/* SPEC section 1. q, k: [B,T,H,K]; v, o: [B,T,H,V] (f32/f16/bf16, all four the same dtype);
 * g: [B,T,H], g_gamma: [H], gk: [B,T,H,K] (f32, each optional); h0, ht: [N,H,K,V] f32;
 * z0, zt: [N,H,K] f32 (normalizer state, only with normalize). Gates, states and z must be
 * contiguous. Outputs must not overlap inputs, except that h0 and ht may be the same tensor (the
 * state is updated in place); z0 and zt must not overlap. */
typedef struct vkla_linear_attn_args {
    vkla_form form;
    vkla_tensor q, k, v, o;
    vkla_tensor g, g_gamma, gk;
    vkla_tensor h0, ht, z0, zt;
    const int32_t *cu_seqlens;   /* host array of num_seqs + 1 offsets, or NULL */
    uint32_t num_seqs;
    float scale;                 /* 0 = K^-1/2 */
    int normalize;
    float eps;                   /* 0 = 1e-6 */
    uint32_t chunk_size;         /* 0 = 64; 16, 32 or 64 */
    vkla_buffer *scratch;
    uint64_t scratch_offset;
} vkla_linear_attn_args;

VKLA_API vkla_result vkla_linear_attn_run(vkla_context *ctx, const vkla_linear_attn_args *args);
VKLA_API vkla_result vkla_linear_attn_record(vkla_context *ctx, VkCommandBuffer cmd,
                                             const vkla_linear_attn_args *args);
VKLA_API vkla_result vkla_linear_attn_scratch_size(vkla_context *ctx,
                                                   const vkla_linear_attn_args *args,
                                                   uint64_t *bytes);
VKLA_API vkla_result vkla_linear_attn_bench(vkla_context *ctx, const vkla_linear_attn_args *args,
                                            uint32_t warmup, uint32_t reps, double *times_us);

/* SPEC section 3: LION bidirectional linear attention (every token attends to every token of its
 * own sequence). q, k: [B,T,H,K]; v, o: [B,T,H,V] (f32/f16/bf16, all four the same dtype).
 * Per-token log decay a_t (natural log, finite, <= 0): g[b,t,h] (LION-S) plus g_gamma[h]
 * (LION-D); each optional, both together add up; neither = LION-LIT (no decay). g: [B,T,H] f32,
 * g_gamma: [H] f32. normalize: o_i = sum_j A_ij v_j / (sum_j A_ij + eps).
 * Forms: chunk (default, linear in T), attn (tiled T x T), rnn (forward and backward scans);
 * chunk_size (16, 32, 64; checked for every form) is used by the chunk form only. No states in
 * or out. Scratch: packed f32 copies of f16/bf16 or non-4-aligned rows, and the per-chunk states
 * (chunk) or per-token partials (rnn); f32 4-aligned inputs with the attn form need none. */
typedef struct vkla_lion_args {
    vkla_form form;              /* VKLA_FORM_CHUNK (default), VKLA_FORM_ATTN, VKLA_FORM_RNN */
    vkla_tensor q, k, v, o;
    vkla_tensor g, g_gamma;
    const int32_t *cu_seqlens;   /* host array of num_seqs + 1 offsets, or NULL */
    uint32_t num_seqs;
    float scale;                 /* 0 = K^-1/2 */
    int normalize;
    float eps;                   /* 0 = 1e-6 */
    uint32_t chunk_size;         /* 0 = 64; 16, 32 or 64 */
    vkla_buffer *scratch;
    uint64_t scratch_offset;
} vkla_lion_args;

VKLA_API vkla_result vkla_lion_run(vkla_context *ctx, const vkla_lion_args *args);
VKLA_API vkla_result vkla_lion_record(vkla_context *ctx, VkCommandBuffer cmd,
                                      const vkla_lion_args *args);
VKLA_API vkla_result vkla_lion_scratch_size(vkla_context *ctx, const vkla_lion_args *args,
                                            uint64_t *bytes);
VKLA_API vkla_result vkla_lion_bench(vkla_context *ctx, const vkla_lion_args *args,
                                     uint32_t warmup, uint32_t reps, double *times_us);

/* SPEC section 2 (DeltaNet; Gated DeltaNet with g). q, k: [B,T,H,K]; v, o: [B,T,HV,V] with HV a
 * multiple of H (value head j reads q/k head j / (HV/H)); all four the same dtype (f32/f16/bf16).
 * beta: [B,T,HV] f32 (required); g: [B,T,HV] f32 log gate (optional); h0, ht: [N,HV,K,V] f32.
 * l2norm: q and k are replaced by x / sqrt(sum x^2 + 1e-6) inside the op. beta, g and the
 * states must be contiguous. Outputs must not overlap inputs, except that h0 and ht may be the
 * same tensor (the state is updated in place, as in a decode step).
 * Forms: chunk (WY / UT transform, the default) and recurrent (also the decode step).
 * The chunk form's scratch must start 16-byte aligned. */
typedef struct vkla_delta_rule_args {
    vkla_form form;
    vkla_tensor q, k, v, o;
    vkla_tensor beta, g;
    vkla_tensor h0, ht;
    const int32_t *cu_seqlens;   /* host array of num_seqs + 1 offsets, or NULL */
    uint32_t num_seqs;
    float scale;                 /* 0 = K^-1/2 */
    int l2norm;
    uint32_t chunk_size;         /* 0 = 64; 16, 32 or 64 */
    vkla_buffer *scratch;
    uint64_t scratch_offset;
} vkla_delta_rule_args;

VKLA_API vkla_result vkla_delta_rule_run(vkla_context *ctx, const vkla_delta_rule_args *args);
VKLA_API vkla_result vkla_delta_rule_record(vkla_context *ctx, VkCommandBuffer cmd,
                                            const vkla_delta_rule_args *args);
VKLA_API vkla_result vkla_delta_rule_scratch_size(vkla_context *ctx,
                                                  const vkla_delta_rule_args *args,
                                                  uint64_t *bytes);
VKLA_API vkla_result vkla_delta_rule_bench(vkla_context *ctx, const vkla_delta_rule_args *args,
                                           uint32_t warmup, uint32_t reps, double *times_us);


/* ---------------------------------------------------------------------------------------------
 * Backward passes (SPEC section 4)
 *
 * Each backward op returns the gradients of  L = sum(dout * o) + sum(dht * ht)  (dht only for
 * the causal ops; zero when absent) with respect to the forward's inputs. Same four calls,
 * same zero-means-default rule, same tensor-view rules and same barrier contract as the
 * forward ops (its inputs: the forward's inputs plus dout and dht; its outputs: the gradients).
 *
 * The args hold the forward's args unchanged in `fwd`, so a training loop passes the very
 * struct it gave vkla_X_run / vkla_X_record. The backward reads only fwd's inputs and options
 * (q k v, gates, beta, h0, z0, cu_seqlens/num_seqs, scale, normalize, eps, l2norm,
 * chunk_size); fwd's outputs (o, ht, zt) and fwd.scratch are ignored, and fwd.form is only
 * checked: the backward is chunkwise for every form (linear in T, parallel over chunks), since
 * the gradient of an op does not depend on the form that computed it.
 *
 * What the backward reads from the forward: nothing. It recomputes the states entering each
 * chunk in its own scratch (vkla_X_backward_scratch_size says how much), so the forward need
 * not save anything and the caller keeps no activations besides the op's inputs.
 *
 * Gradient tensors: each is optional; a gradient whose buffer is NULL is not computed. A
 * gradient of an input that was not given must be absent. Each has the shape of its input;
 * dq, dk, dv take the dtype of q, k, v (any strides, like q k v); dg, dg_gamma, dgk, dbeta and
 * dh0 are f32 and contiguous. dout has the shape and dtype of o; dht is f32 [N,H(V),K,V].
 * Gradients must not overlap each other, dout, dht or any forward input.
 * ------------------------------------------------------------------------------------------- */

/* Gradients of vkla_linear_attn (SPEC sections 1 and 4). With normalize, the gradients are
 * those of the normalised output (z enters through the denominator; z0 gets no gradient).
 * dg [B,T,H], dg_gamma [H] (summed over all tokens and sequences), dgk [B,T,H,K],
 * dh0 [N,H,K,V]. */
typedef struct vkla_linear_attn_backward_args {
    vkla_linear_attn_args fwd;   /* the forward's args (inputs and options) */
    vkla_tensor dout;            /* [B,T,H,V], dtype of q (required) */
    vkla_tensor dht;             /* [N,H,K,V] f32, optional */
    vkla_tensor dq, dk, dv;
    vkla_tensor dg, dg_gamma, dgk, dh0;
    vkla_buffer *scratch;
    uint64_t scratch_offset;
} vkla_linear_attn_backward_args;

VKLA_API vkla_result vkla_linear_attn_backward_run(vkla_context *ctx,
                                                   const vkla_linear_attn_backward_args *args);
VKLA_API vkla_result vkla_linear_attn_backward_record(vkla_context *ctx, VkCommandBuffer cmd,
                                                      const vkla_linear_attn_backward_args *args);
VKLA_API vkla_result vkla_linear_attn_backward_scratch_size(
    vkla_context *ctx, const vkla_linear_attn_backward_args *args, uint64_t *bytes);
VKLA_API vkla_result vkla_linear_attn_backward_bench(vkla_context *ctx,
                                                     const vkla_linear_attn_backward_args *args,
                                                     uint32_t warmup, uint32_t reps,
                                                     double *times_us);

/* Gradients of vkla_lion (SPEC sections 3 and 4): dq dk dv, dg [B,T,H] (LION-S) and dg_gamma
 * [H] (LION-D, summed over all tokens and sequences). No states, so no dht or dh0. */
typedef struct vkla_lion_backward_args {
    vkla_lion_args fwd;          /* the forward's args (inputs and options) */
    vkla_tensor dout;            /* [B,T,H,V], dtype of q (required) */
    vkla_tensor dq, dk, dv;
    vkla_tensor dg, dg_gamma;
    vkla_buffer *scratch;
    uint64_t scratch_offset;
} vkla_lion_backward_args;

VKLA_API vkla_result vkla_lion_backward_run(vkla_context *ctx,
                                            const vkla_lion_backward_args *args);
VKLA_API vkla_result vkla_lion_backward_record(vkla_context *ctx, VkCommandBuffer cmd,
                                               const vkla_lion_backward_args *args);
VKLA_API vkla_result vkla_lion_backward_scratch_size(vkla_context *ctx,
                                                     const vkla_lion_backward_args *args,
                                                     uint64_t *bytes);
VKLA_API vkla_result vkla_lion_backward_bench(vkla_context *ctx,
                                              const vkla_lion_backward_args *args,
                                              uint32_t warmup, uint32_t reps, double *times_us);

/* Gradients of vkla_delta_rule (SPEC sections 2 and 4): dq dk [B,T,H,K] (with grouped value
 * heads, summed over the value heads that share a q/k head; with l2norm, with respect to the
 * raw q and k given to the op), dv [B,T,HV,V], dbeta [B,T,HV], dg [B,T,HV], dh0 [N,HV,K,V]. */
typedef struct vkla_delta_rule_backward_args {
    vkla_delta_rule_args fwd;    /* the forward's args (inputs and options) */
    vkla_tensor dout;            /* [B,T,HV,V], dtype of q (required) */
    vkla_tensor dht;             /* [N,HV,K,V] f32, optional */
    vkla_tensor dq, dk, dv;
    vkla_tensor dbeta, dg, dh0;
    vkla_buffer *scratch;
    uint64_t scratch_offset;
} vkla_delta_rule_backward_args;

VKLA_API vkla_result vkla_delta_rule_backward_run(vkla_context *ctx,
                                                  const vkla_delta_rule_backward_args *args);
VKLA_API vkla_result vkla_delta_rule_backward_record(vkla_context *ctx, VkCommandBuffer cmd,
                                                     const vkla_delta_rule_backward_args *args);
VKLA_API vkla_result vkla_delta_rule_backward_scratch_size(
    vkla_context *ctx, const vkla_delta_rule_backward_args *args, uint64_t *bytes);
VKLA_API vkla_result vkla_delta_rule_backward_bench(vkla_context *ctx,
                                                    const vkla_delta_rule_backward_args *args,
                                                    uint32_t warmup, uint32_t reps,
                                                    double *times_us);

/* ---------------------------------------------------------------------------------------------
 * Per-kernel profile of the bench calls
 *
 * vkla_context_profile(ctx, p) with p set makes every later vkla_X_bench / vkla_X_backward_bench
 * call on ctx also time each kernel launch of the op: the timed repetitions are recorded with a
 * GPU timestamp before and after every launch (a launch is one kernel over the whole call: all
 * the pieces a split into maxStorageBufferRange windows needs), and the call fills p with one
 * entry per launch, in recording order. vkla_context_profile(ctx, NULL) turns it off (the
 * default): then nothing is recorded and nothing is paid. _run and _record are never profiled.
 *
 * With the profile on, the bench call warms up at least once (the first warm-up copy is where
 * the launches are counted), and its times_us include the cost of the extra timestamps. A
 * launch's time is from the moment everything recorded before it has finished to the moment it
 * has finished itself (both stamps at BOTTOM_OF_PIPE): where the op puts a barrier before the
 * launch (every launch that reads an earlier one's results) that is the kernel's own time; where
 * two launches have no barrier between them and the device overlaps them, the second is charged
 * only the time it adds. Either way the launches' times add up to the op's time less the gaps
 * between them (barriers, vkCmdUpdateBuffer of varlen tables).
 *
 * p must stay valid while it is set; vkla writes its fields during the bench calls only (and
 * during vkla_device_roofline, whose probe has no op launches: count 0).
 * ------------------------------------------------------------------------------------------- */
typedef struct vkla_kernel_time {
    char name[64];        /* the kernel's pipeline, e.g. "linear_attn/chunk_state.f32" */
    uint32_t groups[3];   /* workgroups of its first vkCmdDispatch (x, y, z) */
    uint32_t dispatches;  /* vkCmdDispatch calls of the launch (split pieces, z batches) */
    double time_us;       /* median over the timed repetitions */
    double flops;         /* the launch site's FLOP model of this launch (0 = not modelled) */
    double bytes;         /* its byte model: the data the kernel reads and writes, once each */
} vkla_kernel_time;

typedef struct vkla_profile {
    vkla_kernel_time *kernels; /* caller's array of `capacity` entries (may be NULL with 0) */
    uint32_t capacity;
    uint32_t count;            /* out: launches per op call (entries beyond capacity dropped) */
    uint32_t reps;             /* out: timed repetitions the medians are over */
    double total_us;           /* out: median time of the whole op call in the same repetitions */
} vkla_profile;

VKLA_API vkla_result vkla_context_profile(vkla_context *ctx, vkla_profile *profile);

#ifdef __cplusplus
}
#endif
#endif /* VKLA_H_ */
