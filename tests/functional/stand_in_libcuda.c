/*
 * Stand-in libcuda.so.1 for machines without a GPU: the CUDA driver API calls that
 * nvgpu_cuda.vector_add makes, with "device memory" in host memory and the vectorAdd
 * kernel computed on the CPU. STANDIN_CUDA_FAIL=<call>:<code> makes that call fail with
 * that CUresult; STANDIN_CUDA_FAIL=wrong-sum makes the kernel write a wrong element;
 * STANDIN_CUDA_FAIL=hang makes cuInit never return, like a driver stuck on a hung GPU;
 * STANDIN_CUDA_FAIL=crash makes it abort the process.
 * Built by tests/functional/test_host_check.py with `cc -shared -fPIC`.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef int CUresult;

static CUresult fail(const char *call)
{
    const char *spec = getenv("STANDIN_CUDA_FAIL");
    size_t n = strlen(call);
    if (spec && strncmp(spec, call, n) == 0 && spec[n] == ':')
        return atoi(spec + n + 1);
    return 0;
}

CUresult cuGetErrorName(CUresult code, const char **out)
{
    switch (code) {
    case 100: *out = "CUDA_ERROR_NO_DEVICE"; return 0;
    case 222: *out = "CUDA_ERROR_UNSUPPORTED_PTX_VERSION"; return 0;
    case 719: *out = "CUDA_ERROR_LAUNCH_FAILED"; return 0;
    case 999: *out = "CUDA_ERROR_UNKNOWN"; return 0;
    }
    return 1;
}

CUresult cuGetErrorString(CUresult code, const char **out)
{
    switch (code) {
    case 100: *out = "no CUDA-capable device is detected"; return 0;
    case 222: *out = "the provided PTX was compiled with an unsupported toolchain."; return 0;
    case 719: *out = "unspecified launch failure"; return 0;
    case 999: *out = "unknown error"; return 0;
    }
    return 1;
}

CUresult cuDriverGetVersion(int *v) { *v = 13000; return 0; }
CUresult cuInit(unsigned flags)
{
    const char *spec = getenv("STANDIN_CUDA_FAIL");
    (void)flags;
    while (spec && !strcmp(spec, "hang"))
        pause();
    if (spec && !strcmp(spec, "crash"))
        abort();
    return fail("cuInit");
}
CUresult cuDeviceGet(int *dev, int ordinal) { *dev = ordinal; return ordinal ? 101 : fail("cuDeviceGet"); }
CUresult cuDeviceGetName(char *name, int len, int dev)
{
    (void)dev;
    strncpy(name, "Stand-in GPU", len);
    return 0;
}
CUresult cuCtxCreate_v2(void **ctx, unsigned flags, int dev)
{
    (void)flags; (void)dev;
    *ctx = (void *)1;
    return fail("cuCtxCreate_v2");
}
CUresult cuCtxDestroy_v2(void *ctx) { (void)ctx; return 0; }
CUresult cuCtxSynchronize(void) { return fail("cuCtxSynchronize"); }

CUresult cuModuleLoadData(void **mod, const void *image)
{
    if (!strstr((const char *)image, ".entry vectorAdd("))
        return 218;
    *mod = (void *)2;
    return fail("cuModuleLoadData");
}
CUresult cuModuleGetFunction(void **fn, void *mod, const char *name)
{
    (void)mod;
    if (strcmp(name, "vectorAdd"))
        return 500;
    *fn = (void *)3;
    return 0;
}

CUresult cuMemAlloc_v2(uint64_t *ptr, size_t size)
{
    CUresult r = fail("cuMemAlloc_v2");
    if (r)
        return r;
    *ptr = (uint64_t)(uintptr_t)malloc(size);
    return *ptr ? 0 : 2;
}
CUresult cuMemFree_v2(uint64_t ptr) { free((void *)(uintptr_t)ptr); return 0; }
CUresult cuMemcpyHtoD_v2(uint64_t dst, const void *src, size_t n)
{
    memcpy((void *)(uintptr_t)dst, src, n);
    return 0;
}
CUresult cuMemcpyDtoH_v2(void *dst, uint64_t src, size_t n)
{
    memcpy(dst, (void *)(uintptr_t)src, n);
    return 0;
}

CUresult cuLaunchKernel(void *fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                        unsigned bz, unsigned shmem, void *stream, void **params, void **extra)
{
    (void)fn; (void)gy; (void)gz; (void)by; (void)bz; (void)shmem; (void)stream; (void)extra;
    CUresult r = fail("cuLaunchKernel");
    if (r)
        return r;
    const float *a = (const float *)(uintptr_t) * (uint64_t *)params[0];
    const float *b = (const float *)(uintptr_t) * (uint64_t *)params[1];
    float *c = (float *)(uintptr_t) * (uint64_t *)params[2];
    int n = *(int *)params[3];
    for (unsigned i = 0; i < gx * bx; i++)
        if ((int)i < n)
            c[i] = a[i] + b[i];
    const char *spec = getenv("STANDIN_CUDA_FAIL");
    if (spec && !strcmp(spec, "wrong-sum"))
        c[n / 2] += 1.0f;
    return 0;
}
