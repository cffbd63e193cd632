#ifndef TAILPLANE_CMALLOC_SHIM_H
#define TAILPLANE_CMALLOC_SHIM_H

// glibc's allocator, tuned by policyd and the simulators at start (docs/performance.md, "Packages").
#if defined(__linux__)
#include <features.h>
#endif

#if defined(__GLIBC__)
#include <malloc.h>

/// Serves every allocation of at least `bytes` with a mapping of its own, unmapped when freed, and turns off
/// glibc's sliding threshold (which rises to the largest block freed so far, up to 32 MiB). Returns 1 when
/// the setting was taken.
static inline int tailplane_set_mmap_threshold(int bytes) { return mallopt(M_MMAP_THRESHOLD, bytes); }
#else
static inline int tailplane_set_mmap_threshold(int bytes) {
    (void)bytes;
    return 0;
}
#endif

#endif
