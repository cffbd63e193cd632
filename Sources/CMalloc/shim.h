#ifndef TAILPLANE_CMALLOC_SHIM_H
#define TAILPLANE_CMALLOC_SHIM_H

// glibc's allocator, tuned by policyd and the simulators at start (docs/performance.md, "Packages").
#if defined(__linux__)
#include <features.h>
#endif

#if defined(__GLIBC__)
#include <malloc.h>

/// Serves allocations of at least `bytes` that the arena's free space cannot satisfy with a mapping of their
/// own, unmapped when freed, and turns off glibc's sliding threshold (which rises to the largest mapped block
/// freed so far, up to 32 MiB). Returns 1 when the setting was taken, 0 elsewhere than glibc.
static inline int tailplane_set_mmap_threshold(int bytes) { return mallopt(M_MMAP_THRESHOLD, bytes); }
#else
static inline int tailplane_set_mmap_threshold(int bytes) {
    (void)bytes;
    return 0;
}
#endif

#endif
