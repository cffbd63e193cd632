#ifndef TAILPLANE_CMALLOC_SHIM_H
#define TAILPLANE_CMALLOC_SHIM_H

// glibc's allocator, tuned by policyd and the simulators at start (docs/performance.md, "Packages").
#if defined(__linux__)
#include <features.h>
#endif

#if defined(__GLIBC__)
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

/// Serves allocations of 64 KiB or more that the arena's free space cannot satisfy with a mapping of their
/// own, unmapped when freed, and turns off glibc's sliding threshold (which rises to the largest mapped block
/// freed so far, up to 32 MiB): freed package-download chunks then go back to the system instead of
/// fragmenting the arenas. An operator's own threshold (`MALLOC_MMAP_THRESHOLD_`, or
/// `glibc.malloc.mmap_threshold` in `GLIBC_TUNABLES`) is left alone. Returns 1 when the setting was taken.
static inline int tailplane_return_large_buffers(void) {
    const char *tunables = getenv("GLIBC_TUNABLES");
    if (getenv("MALLOC_MMAP_THRESHOLD_") != NULL
        || (tunables != NULL && strstr(tunables, "glibc.malloc.mmap_threshold") != NULL)) {
        return 0;
    }
    return mallopt(M_MMAP_THRESHOLD, 64 * 1024);
}
#else
static inline int tailplane_return_large_buffers(void) { return 0; }
#endif

#endif
