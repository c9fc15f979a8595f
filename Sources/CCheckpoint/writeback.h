// Starts writeback of a file range without waiting for it (Linux sync_file_range), so the disk
// writes a shard's early frames while later ones are still being compressed and the closing
// fsync has little left to wait for. Glibc declares it only under _GNU_SOURCE, which Swift's
// Glibc module does not set; elsewhere it is a no-op and fsync does all the work.
#include <stdint.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
static inline int kaleido_start_writeback(int fd, int64_t offset, int64_t count) {
    return (int)syscall(SYS_sync_file_range, fd, offset, count, 2 /* SYNC_FILE_RANGE_WRITE */);
}
#else
static inline int kaleido_start_writeback(int fd, int64_t offset, int64_t count) { (void)fd; (void)offset; (void)count; return 0; }
#endif

// open(2)'s O_DIRECT: glibc names it O_DIRECT only under _GNU_SOURCE, which Swift's Glibc module
// does not set, but always defines the per-architecture value as __O_DIRECT. 0 (buffered I/O)
// elsewhere.
#if defined(__linux__)
#include <fcntl.h>
#endif
static inline int kaleido_direct_io_flag(void) {
#if defined(__linux__) && defined(__O_DIRECT)
    return __O_DIRECT;
#else
    return 0;
#endif
}
