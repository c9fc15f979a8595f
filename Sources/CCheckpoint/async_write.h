// Writes of a shard that proceed while its next frames are compressed: Linux native AIO on a file
// opened with O_DIRECT, one write in flight at a time.
//
// A background save compresses on one thread (a second one, even at idle priority, doubled what
// the save cost two training threads; BENCHMARKS.md). With plain write(2) that thread waits for
// the disk after every 4 MiB; with the write submitted here it fills the other buffer meanwhile.
// A direct write that extends the file is carried out synchronously by ext4 even when submitted
// asynchronously, so the caller first sizes the file to an upper bound (and cuts it back at the
// end): on the Zen 4 VM, 75 writes of 4 MiB behind 1.5 ms of work each took 0.20 s with the file
// growing (0.09 s inside io_submit) and 0.115 s with it sized first.
//
// Raw system calls (<linux/aio_abi.h>), so no libaio is needed. Elsewhere every call fails and
// the caller writes synchronously. Header-only, like crc32c.h.
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <errno.h>
#if defined(__linux__)
#include <linux/aio_abi.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

// A context for one write in flight; 0 (with errno set) when the kernel offers none.
static inline uint64_t kaleido_async_write_open(void) {
#if defined(__linux__)
    aio_context_t context = 0;
    if (syscall(SYS_io_setup, 1, &context) == 0) return (uint64_t)context;
#else
    errno = ENOSYS;
#endif
    return 0;
}

// Submits a write of `bytes` at `offset`; 0, or −errno (the write was not started).
static inline int kaleido_async_write_submit(uint64_t context, int fd, const void *buffer, size_t bytes, int64_t offset) {
#if defined(__linux__)
    struct iocb request;
    memset(&request, 0, sizeof request);
    request.aio_fildes = (uint32_t)fd;
    request.aio_lio_opcode = IOCB_CMD_PWRITE;
    request.aio_buf = (uint64_t)(uintptr_t)buffer;
    request.aio_nbytes = bytes;
    request.aio_offset = offset;
    struct iocb *requests[1] = {&request};
    long submitted = syscall(SYS_io_submit, (aio_context_t)context, 1, requests);
    if (submitted == 1) return 0;
    return submitted < 0 ? -errno : -EAGAIN;
#else
    (void)context; (void)fd; (void)buffer; (void)bytes; (void)offset;
    return -ENOSYS;
#endif
}

// Waits for the write in flight; its result: bytes written, or −errno.
static inline int64_t kaleido_async_write_wait(uint64_t context) {
#if defined(__linux__)
    struct io_event event;
    for (;;) {
        long n = syscall(SYS_io_getevents, (aio_context_t)context, 1, 1, &event, NULL);
        if (n == 1) return event.res;
        if (n < 0 && errno != EINTR) return -errno;
    }
#else
    (void)context;
    return -ENOSYS;
#endif
}

// Releases the context, first waiting for a write still in flight.
static inline void kaleido_async_write_close(uint64_t context) {
#if defined(__linux__)
    syscall(SYS_io_destroy, (aio_context_t)context);
#else
    (void)context;
#endif
}
