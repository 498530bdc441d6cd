/*
 * Function loading. volk.c is compiled into the library here, but only its table API is used:
 * every context loads its own instance functions and its own VolkDeviceTable from the
 * proc-address functions it was given. volk's global function pointers are never written; they
 * are hidden (and localized in the static library) so they cannot clash with an
 * application's own volk.
 */
#define VK_NO_PROTOTYPES
/* system headers first, so their declarations keep default visibility */
#include <dlfcn.h>
#include <string.h>
#include <volk.h>
#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif
#include <volk.c>
#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#include "internal.h"

#include <string.h>

typedef struct device_loader {
    PFN_vkGetDeviceProcAddr gdpa;
    VkDevice device;
} device_loader;

static PFN_vkVoidFunction load_device_fn(void *context, const char *name)
{
    const device_loader *l = (const device_loader *)context;
    return l->gdpa(l->device, name);
}

void vkla__load_device_table(struct VolkDeviceTable *t, PFN_vkGetDeviceProcAddr gdpa,
                             VkDevice device)
{
    device_loader l = {gdpa, device};
    memset(t, 0, sizeof(*t));
    volkGenLoadDeviceTable(t, &l, load_device_fn);
}

void vkla__load_instance_fns(vkla_instance_fns *f, PFN_vkGetInstanceProcAddr gipa,
                             VkInstance instance)
{
#define LOAD(name) f->name = (PFN_vk##name)gipa(instance, "vk" #name)
    f->GetInstanceProcAddr = gipa;
    if (instance == VK_NULL_HANDLE) {
        LOAD(CreateInstance);
        LOAD(EnumerateInstanceVersion);
        LOAD(EnumerateInstanceLayerProperties);
        LOAD(EnumerateInstanceExtensionProperties);
        return;
    }
    LOAD(DestroyInstance);
    LOAD(EnumeratePhysicalDevices);
    LOAD(GetPhysicalDeviceProperties);
    LOAD(GetPhysicalDeviceProperties2);
    LOAD(GetPhysicalDeviceFeatures2);
    LOAD(GetPhysicalDeviceMemoryProperties);
    LOAD(GetPhysicalDeviceQueueFamilyProperties);
    LOAD(EnumerateDeviceExtensionProperties);
    LOAD(CreateDevice);
    LOAD(GetDeviceProcAddr);
    LOAD(CreateDebugUtilsMessengerEXT);
    LOAD(DestroyDebugUtilsMessengerEXT);
    if (!f->GetPhysicalDeviceProperties2)
        f->GetPhysicalDeviceProperties2 =
            (PFN_vkGetPhysicalDeviceProperties2)gipa(instance, "vkGetPhysicalDeviceProperties2KHR");
    if (!f->GetPhysicalDeviceFeatures2)
        f->GetPhysicalDeviceFeatures2 =
            (PFN_vkGetPhysicalDeviceFeatures2)gipa(instance, "vkGetPhysicalDeviceFeatures2KHR");
#undef LOAD
}
