/*
 * vkla-info - list the Vulkan devices vkla sees and the kernel variant it picks.
 *
 *   vkla-info [--device SEL] [--json]
 *
 * Lists every device; then opens a context on the default device (or --device SEL: an index
 * or a case-insensitive name substring, like VKLA_DEVICE) and prints the chosen variant.
 * --json prints one JSON object per device, one per line; the selected device has
 * "selected": true and its "variant". Exit status: 0 ok, 1 no device or the context failed,
 * 2 bad arguments.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define PROG "vkla-info"

static void api_text(uint32_t v, char *buf, size_t n)
{
  snprintf(buf, n, "%u.%u.%u", VK_API_VERSION_MAJOR(v), VK_API_VERSION_MINOR(v),
           VK_API_VERSION_PATCH(v));
}

static const char *yn(int b) { return b ? "yes" : "no"; }

static void print_text(uint32_t idx, const vkla_device_info *d, int selected, const char *variant)
{
  char api[32];
  api_text(d->api_version, api, sizeof api);
  printf("device %u: %s%s\n", idx, d->name, selected ? "  [selected]" : "");
  printf("  type                      %s\n", tool_device_type_name(d->device_type));
  printf("  vendor id / device id     0x%04x / 0x%04x\n", d->vendor_id, d->device_id);
  printf("  driver                    %s (%s), version 0x%08x\n", d->driver_name[0] ? d->driver_name : "?",
         d->driver_info[0] ? d->driver_info : "no info", d->driver_version);
  printf("  Vulkan API                %s\n", api);
  printf("  subgroup size             %u (min %u, max %u), arithmetic %s, clustered %s\n",
         d->subgroup_size, d->subgroup_min_size, d->subgroup_max_size, yn(d->subgroup_arithmetic),
         yn(d->subgroup_clustered));
  printf("  shared memory             %u bytes per workgroup (max %u invocations)\n",
         d->max_shared_memory, d->max_workgroup_invocations);
  printf("  maxStorageBufferRange     %llu bytes (offset alignment %llu)\n",
         (unsigned long long)d->max_storage_buffer_range,
         (unsigned long long)d->min_storage_buffer_offset_alignment);
  printf("  device-local memory       %.1f MiB\n", (double)d->device_local_bytes / 1048576.0);
  printf("  16-bit storage            %s\n", yn(d->fp16_storage));
  printf("  fp16 arithmetic           %s\n", yn(d->fp16_arithmetic));
  printf("  bf16 arithmetic           %s\n", yn(d->bf16_arithmetic));
  printf("  int8 arithmetic           %s\n", yn(d->int8_arithmetic));
  printf("  cooperative matrix        %s\n", yn(d->cooperative_matrix));
  printf("  push descriptor           %s\n", yn(d->push_descriptor));
  printf("  timestamps                period %.3f ns, %u valid bits%s\n", d->timestamp_period_ns,
         d->timestamp_valid_bits, d->timestamp_valid_bits ? "" : " (no timestamps: vkla-bench cannot time)");
  if (selected)
    printf("  vkla variant              %s\n", variant);
}

static void print_json(uint32_t idx, const vkla_device_info *d, int selected, const char *variant)
{
  char api[32];
  api_text(d->api_version, api, sizeof api);
  printf("{\"index\": %u, \"name\": ", idx);
  tool_json_string(stdout, d->name);
  printf(", \"device_type\": ");
  tool_json_string(stdout, tool_device_type_name(d->device_type));
  printf(", \"vendor_id\": %u, \"device_id\": %u, \"driver_name\": ", d->vendor_id, d->device_id);
  tool_json_string(stdout, d->driver_name);
  printf(", \"driver_info\": ");
  tool_json_string(stdout, d->driver_info);
  printf(", \"driver_version\": %u, \"api_version\": ", d->driver_version);
  tool_json_string(stdout, api);
  printf(", \"subgroup_size\": %u, \"subgroup_min_size\": %u, \"subgroup_max_size\": %u",
         d->subgroup_size, d->subgroup_min_size, d->subgroup_max_size);
  printf(", \"subgroup_arithmetic\": %s, \"subgroup_clustered\": %s",
         d->subgroup_arithmetic ? "true" : "false", d->subgroup_clustered ? "true" : "false");
  printf(", \"max_shared_memory\": %u, \"max_workgroup_invocations\": %u", d->max_shared_memory,
         d->max_workgroup_invocations);
  printf(", \"max_storage_buffer_range\": %llu, \"min_storage_buffer_offset_alignment\": %llu",
         (unsigned long long)d->max_storage_buffer_range,
         (unsigned long long)d->min_storage_buffer_offset_alignment);
  printf(", \"device_local_bytes\": %llu", (unsigned long long)d->device_local_bytes);
  printf(", \"fp16_storage\": %s, \"fp16_arithmetic\": %s, \"bf16_arithmetic\": %s"
         ", \"int8_arithmetic\": %s, \"cooperative_matrix\": %s, \"push_descriptor\": %s",
         d->fp16_storage ? "true" : "false", d->fp16_arithmetic ? "true" : "false",
         d->bf16_arithmetic ? "true" : "false", d->int8_arithmetic ? "true" : "false",
         d->cooperative_matrix ? "true" : "false", d->push_descriptor ? "true" : "false");
  printf(", \"timestamp_period_ns\": %.6g, \"timestamp_valid_bits\": %u", d->timestamp_period_ns,
         d->timestamp_valid_bits);
  printf(", \"selected\": %s, \"variant\": ", selected ? "true" : "false");
  if (selected)
    tool_json_string(stdout, variant);
  else
    printf("null");
  printf("}\n");
}

static int all_digits(const char *s)
{
  if (!s || !*s)
    return 0;
  for (; *s; s++)
    if (!isdigit((unsigned char)*s))
      return 0;
  return 1;
}

int main(int argc, char **argv)
{
  const char *device = NULL;
  int json = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--json") == 0) {
      json = 1;
    } else if (strcmp(argv[i], "--device") == 0) {
      if (i + 1 >= argc || !*argv[i + 1]) {
        fprintf(stderr, PROG ": --device: missing value\n");
        return 2;
      }
      device = argv[++i];
    } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      printf("usage: " PROG " [--device SEL] [--json]\n"
             "Lists the Vulkan devices and the kernel variant vkla picks on the selected one\n"
             "(SEL: an index or a case-insensitive name substring; default: VKLA_DEVICE, else\n"
             "the best device).\n");
      return 0;
    } else {
      fprintf(stderr, PROG ": %s: unknown option (see " PROG " --help)\n", argv[i]);
      return 2;
    }
  }

  uint32_t n = 0;
  vkla_result r = vkla_enumerate_devices(NULL, &n);
  if (r != VKLA_SUCCESS) {
    fprintf(stderr, PROG ": device: cannot list devices: %s\n", vkla_result_string(r));
    return 1;
  }
  vkla_device_info *infos = calloc(n ? n : 1, sizeof *infos);
  if (!infos) {
    fprintf(stderr, PROG ": memory: out of host memory\n");
    return 1;
  }
  if (n && (r = vkla_enumerate_devices(infos, &n)) != VKLA_SUCCESS) {
    fprintf(stderr, PROG ": device: cannot list devices: %s\n", vkla_result_string(r));
    free(infos);
    return 1;
  }
  if (n == 0) {
    fprintf(stderr, PROG ": device: no Vulkan device found\n");
    free(infos);
    return 1;
  }

  /* open the default / selected device */
  int rc = 0;
  int64_t sel = -1;
  vkla_device_info chosen;
  memset(&chosen, 0, sizeof chosen);
  vkla_context *ctx = NULL;
  tool_err e;
  if (tool_context_create(device, &ctx, &e) != 0) {
    rc = 1;
  } else {
    vkla_context_device_info(ctx, &chosen);
    vkla_context_destroy(ctx);
    const char *s = device ? device : getenv("VKLA_DEVICE");
    if (s && all_digits(s) && strtoul(s, NULL, 10) < n) {
      sel = (int64_t)strtoul(s, NULL, 10);
    } else {
      for (uint32_t i = 0; i < n && sel < 0; i++)
        if (strcmp(infos[i].name, chosen.name) == 0 && infos[i].vendor_id == chosen.vendor_id &&
            infos[i].device_id == chosen.device_id)
          sel = i;
    }
  }

  for (uint32_t i = 0; i < n; i++) {
    int is_sel = (int64_t)i == sel;
    if (json)
      print_json(i, &infos[i], is_sel, chosen.variant);
    else
      print_text(i, &infos[i], is_sel, chosen.variant);
  }
  if (rc == 0 && !json) {
    if (sel < 0)
      printf("selected: %s (not matched in the list): variant %s\n", chosen.name, chosen.variant);
    else
      printf("selected: device %lld (%s), variant: %s\n", (long long)sel, chosen.name,
             chosen.variant);
  }
  if (rc != 0)
    fprintf(stderr, PROG ": %s: %s\n", e.where, e.what);
  free(infos);
  return rc;
}
