/*
 * ggate.c: the native half of hast on Bun, loaded only by src/native.ts through bun:ffi.
 *
 * What lives here: what Bun cannot do itself on a local component (a regular file or a disk
 * device): open with O_DIRECT, positional I/O straight into caller buffers, flush, discard,
 * zero range, media and sector size, advisory locking; plus the kernel frontends (Linux nbd
 * attach/detach, FreeBSD GEOM Gate).
 *
 * Conventions:
 *   - every function returns a value >= 0 on success and -errno on failure; errno itself is
 *     never left for the caller to read (bun:ffi cannot read it reliably);
 *   - no function keeps state between calls and none allocates: buffers belong to the caller
 *     (one exception: the NBD_DO_IT thread of the kernel nbd ioctl fallback owns its device);
 *   - every loop either makes progress or returns, so none can spin.
 *
 * Platform code sits behind #ifdef __linux__ / __FreeBSD__; the rest is POSIX.
 */
#define _GNU_SOURCE /* Linux: O_DIRECT, fallocate(), FALLOC_FL_* */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifdef __linux__
#include <linux/falloc.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <sys/sendfile.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#endif
#ifdef __FreeBSD__
#include <sys/param.h>
#include <sys/disk.h>
#endif

#define HAST_OPEN_WRITE 0x1
#define HAST_OPEN_DIRECT 0x2
#define HAST_OPEN_CREATE 0x4
#define HAST_OPEN_ALL (HAST_OPEN_WRITE | HAST_OPEN_DIRECT | HAST_OPEN_CREATE)

/* Values of hast_kind(); src/native.ts maps them to names. */
#define HAST_KIND_FILE 0
#define HAST_KIND_BLOCK 1 /* a disk: Linux block device, FreeBSD GEOM provider */
#define HAST_KIND_CHAR 2
#define HAST_KIND_DIRECTORY 3
#define HAST_KIND_OTHER 4

/* One syscall moves at most this much, so a huge request never overflows ssize_t. */
#define HAST_IO_CHUNK_BYTES (1u << 30)

/* Source of zeroes for the zero-range fallback; aligned so it also works with O_DIRECT. */
#define HAST_ZERO_CHUNK_BYTES (1u << 16)
static _Alignas(4096) const unsigned char hast_zeroes[HAST_ZERO_CHUNK_BYTES];

int hast_native_version(void) { return 12; }

int hast_open(const char *path, int flags) {
	if (path == NULL || (flags & ~HAST_OPEN_ALL) != 0) return -EINVAL;
	if ((flags & HAST_OPEN_CREATE) && !(flags & HAST_OPEN_WRITE)) return -EINVAL;
	int oflags = O_CLOEXEC | O_NOCTTY | ((flags & HAST_OPEN_WRITE) ? O_RDWR : O_RDONLY);
	if (flags & HAST_OPEN_DIRECT) oflags |= O_DIRECT;
	if (flags & HAST_OPEN_CREATE) oflags |= O_CREAT;
	for (;;) {
		int fd = open(path, oflags, 0600);
		if (fd >= 0) return fd;
		if (errno != EINTR) return -errno;
	}
}

/* Never retried on EINTR: Linux and FreeBSD release the descriptor even then. */
int hast_close(int fd) { return close(fd) < 0 ? -errno : 0; }

/*
 * Reads until len bytes arrived, end of file, or an error. Returns the byte count, which is
 * short only at end of file (the caller decides whether that is an error).
 */
int64_t hast_pread(int fd, void *buf, uint64_t len, int64_t offset) {
	if (offset < 0 || len > (uint64_t)(INT64_MAX - offset)) return -EINVAL;
	uint64_t done = 0;
	while (done < len) {
		uint64_t want = len - done < HAST_IO_CHUNK_BYTES ? len - done : HAST_IO_CHUNK_BYTES;
		ssize_t n = pread(fd, (unsigned char *)buf + done, (size_t)want, (off_t)(offset + (int64_t)done));
		if (n < 0) {
			if (errno == EINTR) continue;
			return -errno;
		}
		if (n == 0) break;
		done += (uint64_t)n;
	}
	return (int64_t)done;
}

/*
 * One pread of what the page cache holds (preadv2 RWF_NOWAIT, Linux 4.14+): the count, possibly
 * short, or -EAGAIN when the first byte would wait for the disk. A memory file system (tmpfs,
 * ramfs) never waits for one, and is read at once even where it refuses RWF_NOWAIT. -EOPNOTSUPP
 * where the system or the file system cannot say; the caller then reads on a helper thread.
 */
int64_t hast_pread_cached(int fd, void *buf, uint64_t len, int64_t offset) {
	if (offset < 0 || len > (uint64_t)(INT64_MAX - offset)) return -EINVAL;
#if defined(__linux__) && defined(RWF_NOWAIT)
	struct iovec iov = {buf, (size_t)len};
	for (;;) {
		ssize_t n = preadv2(fd, &iov, 1, (off_t)offset, RWF_NOWAIT);
		if (n >= 0) return (int64_t)n;
		if (errno != EINTR) break;
	}
	if (errno != EOPNOTSUPP) return -errno;
	struct statfs fs;
	if (fstatfs(fd, &fs) == 0 && (fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC)) {
		return hast_pread(fd, buf, len, offset);
	}
	return -EOPNOTSUPP;
#else
	(void)fd;
	(void)buf;
	return -EOPNOTSUPP;
#endif
}

/* Writes all len bytes or fails; a write that makes no progress is reported as EIO. */
int64_t hast_pwrite(int fd, const void *buf, uint64_t len, int64_t offset) {
	if (offset < 0 || len > (uint64_t)(INT64_MAX - offset)) return -EINVAL;
	uint64_t done = 0;
	while (done < len) {
		uint64_t want = len - done < HAST_IO_CHUNK_BYTES ? len - done : HAST_IO_CHUNK_BYTES;
		ssize_t n = pwrite(fd, (const unsigned char *)buf + done, (size_t)want, (off_t)(offset + (int64_t)done));
		if (n < 0) {
			if (errno == EINTR) continue;
			return -errno;
		}
		if (n == 0) return -EIO;
		done += (uint64_t)n;
	}
	return (int64_t)done;
}

/* Waits at most wait_us (< 1 s) for fd to be readable: 0, -EAGAIN when it did not become so in
 * time (or a signal interrupted the wait), or -errno. */
static int hast_wait_readable(int fd, int32_t wait_us) {
	struct pollfd p = { .fd = fd, .events = POLLIN };
	struct timespec limit = { .tv_sec = 0, .tv_nsec = (long)wait_us * 1000 };
	int ready = ppoll(&p, 1, &limit, NULL);
	if (ready < 0) return errno == EINTR ? -EAGAIN : -errno;
	return ready == 0 ? -EAGAIN : 0;
}

/*
 * Receive of up to len bytes from a stream socket the event loop also reads: only what is
 * queued in the kernel; with wait_us > 0, first waits at most that long for something to be
 * (ppoll: no busy loop). Returns the count (0 at end of stream), -EAGAIN when nothing came in
 * time (or a signal interrupted the wait), or -errno.
 */
int64_t hast_recv_ready(int fd, void *buf, uint64_t len, int32_t wait_us) {
	if (wait_us < 0 || wait_us >= 1000000) return -EINVAL;
	if (wait_us > 0) {
		int waited = hast_wait_readable(fd, wait_us);
		if (waited < 0) return waited;
	}
	for (;;) {
		ssize_t n = recv(fd, buf, (size_t)len, MSG_DONTWAIT);
		if (n >= 0) return (int64_t)n;
		if (errno == EINTR) continue;
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	}
}

/*
 * Zero-copy bulk transfer between a local component and the peer socket (Linux; elsewhere
 * -EOPNOTSUPP and the caller copies). A sync pass used to copy each chunk four times on its way
 * (pread, send, recv, pwrite); with these the sender copies nothing and the receiver once.
 */

/*
 * 1 when every page of [offset, offset+len) is in the page cache (cachestat(2), Linux 6.5+), 0
 * when some is not, -ENOSYS/-EOPNOTSUPP when the system cannot tell. Lets a sender use sendfile
 * only where it cannot block the event loop on the disk.
 */
#if defined(__linux__) && !defined(SYS_cachestat)
#define SYS_cachestat 451 /* the same on every architecture; C libraries before 2023 lack the name */
#endif
int hast_range_cached(int fd, int64_t offset, uint64_t len) {
	if (offset < 0 || len == 0 || len > (uint64_t)(INT64_MAX - offset)) return -EINVAL;
#ifdef __linux__
	struct { uint64_t off, len; } range = { (uint64_t)offset, len };
	struct { uint64_t cache, dirty, writeback, evicted, recently_evicted; } cs;
	if (syscall(SYS_cachestat, fd, &range, &cs, 0) < 0) return -errno;
	long page = sysconf(_SC_PAGESIZE);
	uint64_t first = (uint64_t)offset / (uint64_t)page;
	uint64_t last = ((uint64_t)offset + len - 1) / (uint64_t)page;
	return cs.cache >= last - first + 1 ? 1 : 0;
#else
	(void)fd;
	return -EOPNOTSUPP;
#endif
}

/*
 * Drops the clean pages of a range from the page cache (POSIX_FADV_DONTNEED), so that the next
 * read of it comes from the medium: an online verification compares what the disks return, not
 * what hastd last wrote. Pages still dirty stay (the kernel starts their write-back). Does not
 * wait for the disk. 0, or -errno.
 */
int hast_drop_cached(int fd, int64_t offset, uint64_t len) {
	if (offset < 0 || len == 0 || len > (uint64_t)(INT64_MAX - offset)) return -EINVAL;
	return -posix_fadvise(fd, (off_t)offset, (off_t)len, POSIX_FADV_DONTNEED);
}

/*
 * sendfile from fd at offset to a nonblocking stream socket: as much of len as the socket takes
 * now. Returns the count (short when the socket is full), or -errno when nothing was sent.
 */
int64_t hast_sendfile(int sock, int fd, int64_t offset, uint64_t len) {
	if (offset < 0 || len > (uint64_t)(INT64_MAX - offset)) return -EINVAL;
#ifdef __linux__
	uint64_t done = 0;
	while (done < len) {
		off_t at = (off_t)(offset + (int64_t)done);
		uint64_t want = len - done < HAST_IO_CHUNK_BYTES ? len - done : HAST_IO_CHUNK_BYTES;
		ssize_t n = sendfile(sock, fd, &at, (size_t)want);
		if (n < 0) {
			if (errno == EINTR) continue;
			if (errno == EAGAIN || done > 0) break;
			return -errno;
		}
		if (n == 0) break; /* end of file: the caller's range check makes this a short count */
		done += (uint64_t)n;
	}
	return (int64_t)done;
#else
	(void)sock;
	(void)fd;
	return -EOPNOTSUPP;
#endif
}

/* A pipe for hast_splice_in: nonblocking, close-on-exec, 1 MiB where the system allows it. */
int hast_splice_pipe(int32_t *out) {
	if (out == NULL) return -EINVAL;
#ifdef __linux__
	int p[2];
	if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0) return -errno;
	(void)fcntl(p[1], F_SETPIPE_SZ, 1 << 20); /* fewer splices per chunk; the default works too */
	out[0] = p[0];
	out[1] = p[1];
	return 0;
#else
	return -EOPNOTSUPP;
#endif
}

#ifdef __linux__
/* Empties the pipe: into fd at *offset while fd >= 0 and writes succeed, else into a scratch
 * buffer. Returns 0, the positive errno of the first failed write, or -EPIPE when the pipe
 * could not be emptied (its bytes would land in the next payload: the caller ends the stream). */
static int hast_drain_pipe(int pipe_r, int fd, int64_t *offset, uint64_t held) {
	int failed = 0;
	unsigned char scratch[4096];
	while (held > 0) {
		ssize_t n;
		if (fd >= 0 && !failed) {
			loff_t at = (loff_t)*offset;
			n = splice(pipe_r, NULL, fd, &at, (size_t)held, SPLICE_F_MOVE);
			if (n < 0 && errno == EINTR) continue;
			if (n <= 0) {
				failed = n < 0 ? errno : EIO;
				continue;
			}
			*offset += n;
		} else {
			n = read(pipe_r, scratch, held < sizeof scratch ? (size_t)held : sizeof scratch);
			if (n < 0 && errno == EINTR) continue;
			if (n <= 0) return -EPIPE; /* cannot happen: the bytes are in the pipe */
		}
		held -= (uint64_t)n;
	}
	return failed;
}
#endif

/*
 * Moves up to len bytes queued on a stream socket the event loop also reads into fd at offset
 * (fd < 0: discards them), through an empty pipe from hast_splice_pipe; only what the kernel
 * queued, after waiting at most wait_us for something when nothing is (as hast_recv_ready).
 * io[0] gets the bytes taken from the socket, io[1] the positive errno of a failed file write
 * (the bytes it concerned are taken all the same, and the rest is discarded). Returns 0,
 * -EAGAIN when nothing came (end of stream included), or -errno of the socket.
 */
int hast_splice_in(int sock, int pipe_r, int pipe_w, int fd, int64_t offset, uint64_t len, int32_t wait_us, int64_t *io) {
	if (io == NULL || offset < 0 || len > (uint64_t)(INT64_MAX - offset) || wait_us < 0 || wait_us >= 1000000) return -EINVAL;
	io[0] = 0;
	io[1] = 0;
#ifdef __linux__
	if (wait_us > 0) {
		int waited = hast_wait_readable(sock, wait_us);
		if (waited < 0) return waited;
	}
	int64_t at = offset;
	while ((uint64_t)io[0] < len) {
		uint64_t want = len - (uint64_t)io[0];
		if (want > (1u << 20)) want = 1u << 20;
		ssize_t n = splice(sock, NULL, pipe_w, NULL, (size_t)want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		if (n < 0 && errno == EINTR) continue;
		if (n == 0) break; /* end of stream: the event loop sees it and closes the link */
		if (n < 0) {
			if (errno == EAGAIN) break;
			return io[0] > 0 ? 0 : -errno;
		}
		io[0] += n;
		int failed = hast_drain_pipe(pipe_r, io[1] ? -1 : fd, &at, (uint64_t)n);
		if (failed < 0) return failed;
		if (failed && !io[1]) io[1] = failed;
	}
	return io[0] > 0 ? 0 : -EAGAIN;
#else
	(void)sock;
	(void)pipe_r;
	(void)pipe_w;
	(void)fd;
	return -EOPNOTSUPP;
#endif
}

/* A second descriptor of fd, close-on-exec: a connection handed to another process stays this
 * one whatever becomes of the first (closed and its number reused meanwhile). */
int hast_dup(int fd) {
	int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	return copy < 0 ? -errno : copy;
}

int hast_fdatasync(int fd) { return fdatasync(fd) < 0 ? -errno : 0; }

int hast_fsync(int fd) { return fsync(fd) < 0 ? -errno : 0; }

/*
 * Writes all of buf at offset and makes that range durable: Linux's RWF_DSYNC writes back only
 * this range's pages, then flushes the device cache, where fdatasync would write back every dirty
 * page of the file first (a map update among buffered data writes). Where RWF_DSYNC is missing
 * (older kernels, FreeBSD), pwrite then fdatasync.
 */
int64_t hast_pwrite_durable(int fd, const void *buf, uint64_t len, int64_t offset) {
	if (offset < 0 || len > (uint64_t)(INT64_MAX - offset) || len > (uint64_t)SSIZE_MAX) return -EINVAL;
#if defined(__linux__) && defined(RWF_DSYNC)
	uint64_t done = 0;
	while (done < len) {
		struct iovec v = { .iov_base = (unsigned char *)buf + done, .iov_len = (size_t)(len - done) };
		ssize_t n = pwritev2(fd, &v, 1, (off_t)(offset + (int64_t)done), RWF_DSYNC);
		if (n < 0) {
			if (errno == EINTR) continue;
			if ((errno == EOPNOTSUPP || errno == EINVAL || errno == ENOSYS) && done == 0) break;
			return -errno;
		}
		if (n == 0) return -EIO;
		done += (uint64_t)n;
	}
	if (done == len) return (int64_t)done;
#endif
	int64_t written = hast_pwrite(fd, buf, len, offset);
	if (written < 0) return written;
	return fdatasync(fd) < 0 ? -errno : written;
}

static int hast_valid_range(int64_t offset, int64_t length) {
	return offset >= 0 && length >= 0 && length <= INT64_MAX - offset;
}

int hast_kind(int fd) {
	struct stat st;
	if (fstat(fd, &st) < 0) return -errno;
	if (S_ISREG(st.st_mode)) return HAST_KIND_FILE;
	if (S_ISDIR(st.st_mode)) return HAST_KIND_DIRECTORY;
#ifdef __linux__
	if (S_ISBLK(st.st_mode)) return HAST_KIND_BLOCK;
#endif
#ifdef __FreeBSD__
	/* FreeBSD disks are character devices; a disk is one that answers DIOCGMEDIASIZE. */
	if (S_ISCHR(st.st_mode)) {
		off_t size;
		return ioctl(fd, DIOCGMEDIASIZE, &size) == 0 ? HAST_KIND_BLOCK : HAST_KIND_CHAR;
	}
#endif
	if (S_ISCHR(st.st_mode)) return HAST_KIND_CHAR;
	return HAST_KIND_OTHER;
}

int64_t hast_media_size(int fd) {
	int kind = hast_kind(fd);
	if (kind < 0) return kind;
	if (kind == HAST_KIND_FILE) {
		struct stat st;
		return fstat(fd, &st) < 0 ? -errno : (int64_t)st.st_size;
	}
	if (kind != HAST_KIND_BLOCK) return -ENOTTY;
#ifdef __linux__
	uint64_t size;
	if (ioctl(fd, BLKGETSIZE64, &size) < 0) return -errno;
	return size > INT64_MAX ? -EOVERFLOW : (int64_t)size;
#elif defined(__FreeBSD__)
	off_t size;
	return ioctl(fd, DIOCGMEDIASIZE, &size) < 0 ? -errno : (int64_t)size;
#else
	return -ENOTSUP;
#endif
}

/* Regular files report 512, as hastd does for file-backed components. */
int hast_sector_size(int fd) {
	int kind = hast_kind(fd);
	if (kind < 0) return kind;
	if (kind == HAST_KIND_FILE) return 512;
	if (kind != HAST_KIND_BLOCK) return -ENOTTY;
#ifdef __linux__
	int size;
	return ioctl(fd, BLKSSZGET, &size) < 0 ? -errno : size;
#elif defined(__FreeBSD__)
	u_int size;
	return ioctl(fd, DIOCGSECTORSIZE, &size) < 0 ? -errno : (int)size;
#else
	return -ENOTSUP;
#endif
}

/* Deallocates a range: afterwards it reads back as zeroes on files (TRIM semantics on disks). */
int hast_discard(int fd, int64_t offset, int64_t length) {
	if (!hast_valid_range(offset, length)) return -EINVAL;
	if (length == 0) return 0;
	int kind = hast_kind(fd);
	if (kind < 0) return kind;
#ifdef __linux__
	if (kind == HAST_KIND_BLOCK) {
		uint64_t range[2] = {(uint64_t)offset, (uint64_t)length};
		return ioctl(fd, BLKDISCARD, range) < 0 ? -errno : 0;
	}
	if (kind == HAST_KIND_FILE)
		return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) < 0 ? -errno : 0;
#elif defined(__FreeBSD__)
	if (kind == HAST_KIND_BLOCK) {
		off_t range[2] = {offset, length};
		return ioctl(fd, DIOCGDELETE, range) < 0 ? -errno : 0;
	}
#if __FreeBSD_version >= 1400000
	if (kind == HAST_KIND_FILE) {
		/* fspacectl may stop early; it then leaves the rest of the range in r. Not run here yet. */
		struct spacectl_range r = {.r_offset = offset, .r_len = length};
		while (r.r_len > 0) {
			if (fspacectl(fd, SPACECTL_DEALLOC, &r, 0, &r) < 0 && errno != EINTR) return -errno;
		}
		return 0;
	}
#endif
#endif
	(void)kind;
	return -EOPNOTSUPP;
}

/*
 * Writes zeroes over a range like any other write (into the page cache, no device round trip),
 * from the static zero block: one pwritev of up to HAST_ZERO_IOVECS blocks at a time. Also zero
 * range's fallback.
 */
#define HAST_ZERO_IOVECS 64
int hast_pwrite_zeroes(int fd, int64_t offset, int64_t length) {
	if (!hast_valid_range(offset, length)) return -EINVAL;
	struct iovec iov[HAST_ZERO_IOVECS];
	while (length > 0) {
		int n = 0;
		for (int64_t left = length; left > 0 && n < HAST_ZERO_IOVECS; n++) {
			size_t len = left < HAST_ZERO_CHUNK_BYTES ? (size_t)left : HAST_ZERO_CHUNK_BYTES;
			iov[n].iov_base = (void *)hast_zeroes;
			iov[n].iov_len = len;
			left -= (int64_t)len;
		}
		ssize_t done = pwritev(fd, iov, n, offset);
		if (done < 0) {
			if (errno == EINTR) continue;
			return -errno;
		}
		if (done == 0) return -EIO;
		offset += done;
		length -= done;
	}
	return 0;
}

/* 1 when all len bytes at buf are zero: the first 16 are, and each byte equals the one 16 before
 * it (memcmp is the C library's vectorized loop). */
int hast_is_zero(const void *buf, uint64_t len) {
	const unsigned char *p = buf;
	uint64_t head = len < 16 ? len : 16;
	for (uint64_t i = 0; i < head; i++)
		if (p[i] != 0) return 0;
	return len <= 16 || memcmp(p, p + 16, len - 16) == 0;
}

/* Makes a range read back as zeroes, keeping it allocated where the platform can. */
int hast_zero_range(int fd, int64_t offset, int64_t length) {
	if (!hast_valid_range(offset, length)) return -EINVAL;
	if (length == 0) return 0;
	int kind = hast_kind(fd);
	if (kind < 0) return kind;
	if (kind != HAST_KIND_FILE && kind != HAST_KIND_BLOCK) return -EOPNOTSUPP;
#ifdef __linux__
	if (kind == HAST_KIND_BLOCK) {
		uint64_t range[2] = {(uint64_t)offset, (uint64_t)length};
		return ioctl(fd, BLKZEROOUT, range) < 0 ? -errno : 0;
	}
	if (fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, length) == 0) return 0;
	if (errno != EOPNOTSUPP && errno != ENOSYS) return -errno;
#endif
	/* Plain writes of zeroes, clamped to the file size (zero range never grows the file). */
	int64_t limit_bytes = hast_media_size(fd);
	if (limit_bytes < 0) return (int)limit_bytes;
	int64_t end = offset + length < limit_bytes ? offset + length : limit_bytes;
	return offset < end ? hast_pwrite_zeroes(fd, offset, end - offset) : 0;
}

/* Non-blocking exclusive advisory lock: one hastd (or hastctl create) per component. */
int hast_lock_exclusive(int fd) {
	for (;;) {
		if (flock(fd, LOCK_EX | LOCK_NB) == 0) return 0;
		if (errno != EINTR) return -errno;
	}
}

/* strerror into the caller's buffer, whichever strerror_r flavour libc provides. */
int hast_strerror(int errnum, char *buf, size_t len) {
	if (buf == NULL || len == 0) return -EINVAL;
#if defined(__GLIBC__) && defined(_GNU_SOURCE)
	const char *text = strerror_r(errnum, buf, len);
	if (text != buf) snprintf(buf, len, "%s", text);
#else
	if (strerror_r(errnum, buf, len) != 0) snprintf(buf, len, "Unknown error %d", errnum);
#endif
	return (int)strlen(buf);
}

/*
 * errno names and values of this platform (they differ between Linux and FreeBSD), so TS can
 * name errors and parse names. The first name of a value is the one shown for it.
 */
#define HAST_ERRNO(name) {#name, name}
static const struct {
	const char *name;
	int value;
} hast_errnos[] = {
	HAST_ERRNO(EPERM), HAST_ERRNO(ENOENT), HAST_ERRNO(ESRCH), HAST_ERRNO(EINTR),
	HAST_ERRNO(EIO), HAST_ERRNO(ENXIO), HAST_ERRNO(E2BIG), HAST_ERRNO(EBADF),
	HAST_ERRNO(ECHILD), HAST_ERRNO(EAGAIN), HAST_ERRNO(EWOULDBLOCK), HAST_ERRNO(ENOMEM),
	HAST_ERRNO(EACCES), HAST_ERRNO(EFAULT), HAST_ERRNO(ENOTBLK), HAST_ERRNO(EBUSY),
	HAST_ERRNO(EEXIST), HAST_ERRNO(EXDEV), HAST_ERRNO(ENODEV), HAST_ERRNO(ENOTDIR),
	HAST_ERRNO(EISDIR), HAST_ERRNO(EINVAL), HAST_ERRNO(ENFILE), HAST_ERRNO(EMFILE),
	HAST_ERRNO(ENOTTY), HAST_ERRNO(ETXTBSY), HAST_ERRNO(EFBIG), HAST_ERRNO(ENOSPC),
	HAST_ERRNO(ESPIPE), HAST_ERRNO(EROFS), HAST_ERRNO(EMLINK), HAST_ERRNO(EPIPE),
	HAST_ERRNO(ERANGE), HAST_ERRNO(EDEADLK), HAST_ERRNO(ENAMETOOLONG), HAST_ERRNO(ENOLCK),
	HAST_ERRNO(ENOSYS), HAST_ERRNO(ENOTEMPTY), HAST_ERRNO(ELOOP), HAST_ERRNO(EOPNOTSUPP),
	HAST_ERRNO(ENOTSUP), HAST_ERRNO(EOVERFLOW), HAST_ERRNO(ECANCELED), HAST_ERRNO(EDQUOT),
	HAST_ERRNO(ESTALE), HAST_ERRNO(ETIMEDOUT), HAST_ERRNO(ECONNREFUSED), HAST_ERRNO(ECONNRESET),
	HAST_ERRNO(ECONNABORTED), HAST_ERRNO(ENOTCONN), HAST_ERRNO(ESHUTDOWN), HAST_ERRNO(EPROTO),
	HAST_ERRNO(EHOSTUNREACH), HAST_ERRNO(ENETUNREACH), HAST_ERRNO(EADDRINUSE), HAST_ERRNO(EBADMSG),
	HAST_ERRNO(ENODATA), HAST_ERRNO(EMSGSIZE),
#ifdef EFTYPE
	HAST_ERRNO(EFTYPE),
#endif
#ifdef EINTEGRITY
	HAST_ERRNO(EINTEGRITY),
#endif
#ifdef EREMOTEIO
	HAST_ERRNO(EREMOTEIO),
#endif
#ifdef ENOMEDIUM
	HAST_ERRNO(ENOMEDIUM),
#endif
};

/*
 * Appends "key=value\n" to buf when it fits (the tables below are read by src/native.ts), and
 * always counts its length in *used, so a caller with too small a buffer learns the size needed.
 */
static int hast_append_line(char *buf, size_t len, size_t *used, const char *key, unsigned long long value) {
	char line[96];
	int n = snprintf(line, sizeof(line), "%s=%llu\n", key, value);
	if (n < 0 || (size_t)n >= sizeof(line)) return -EOVERFLOW;
	if (buf != NULL && *used + (size_t)n < len) memcpy(buf + *used, line, (size_t)n);
	*used += (size_t)n;
	return 0;
}

/* Writes "NAME=value\n" lines; returns the length needed (call again with more room if larger). */
int hast_errno_table(char *buf, size_t len) {
	size_t used = 0;
	for (size_t i = 0; i < sizeof(hast_errnos) / sizeof(hast_errnos[0]); i++) {
		int rc = hast_append_line(buf, len, &used, hast_errnos[i].name, (unsigned long long)hast_errnos[i].value);
		if (rc < 0) return rc;
	}
	if (buf != NULL && used < len) buf[used] = '\0';
	return (int)used;
}

/*
 * Linux kernel NBD client (platform.md section 3): the kernel is handed one end of a socket
 * that is already in transmission phase (no handshake; it sends READ/WRITE/FLUSH/TRIM and
 * expects simple replies). Preferred path: generic netlink family "nbd" (NBD_CMD_CONNECT
 * returns at once, the kernel picks the index and keeps its own reference to the socket).
 * Fallback for kernels without the family: the ioctls on a free /dev/nbdN, with NBD_DO_IT
 * (which blocks until disconnect) in a detached pthread owned by this library.
 *
 * The NBD constants are written out from platform.md rather than taken from <linux/nbd.h>,
 * which not every libc header set ships. Not run on the build machine (no nbd module there):
 * everything past "is there an nbd family or device" is untested.
 */
#ifdef __linux__
#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <pthread.h>
#include <sys/time.h>

#define HAST_NBD_IOCTL(n) (0xab00u | (n)) /* _IO(0xab, n): no size, no direction bits */
#define HAST_NBD_SET_SOCK HAST_NBD_IOCTL(0)
#define HAST_NBD_DO_IT HAST_NBD_IOCTL(3)
#define HAST_NBD_CLEAR_SOCK HAST_NBD_IOCTL(4)
#define HAST_NBD_SET_SIZE_BLOCKS HAST_NBD_IOCTL(7)
#define HAST_NBD_DISCONNECT HAST_NBD_IOCTL(8)
#define HAST_NBD_SET_TIMEOUT HAST_NBD_IOCTL(9)
#define HAST_NBD_SET_FLAGS HAST_NBD_IOCTL(10)
#define HAST_NBD_SET_BLKSIZE HAST_NBD_IOCTL(1)

#define HAST_NBD_CMD_CONNECT 1
#define HAST_NBD_CMD_DISCONNECT 2
#define HAST_NBD_ATTR_INDEX 1
#define HAST_NBD_ATTR_SIZE_BYTES 2
#define HAST_NBD_ATTR_BLOCK_SIZE_BYTES 3
#define HAST_NBD_ATTR_TIMEOUT 4
#define HAST_NBD_ATTR_SERVER_FLAGS 5
#define HAST_NBD_ATTR_CLIENT_FLAGS 6
#define HAST_NBD_ATTR_SOCKETS 7
#define HAST_NBD_ATTR_BACKEND_IDENTIFIER 10
#define HAST_NBD_SOCK_ITEM 1
#define HAST_NBD_SOCK_FD 1
#define HAST_NBD_CFLAG_DESTROY_ON_DISCONNECT 1
#define HAST_NBD_GENL_VERSION 1

/* /dev/nbdN probed for a free device; the module's default nbds_max is 16. */
#define HAST_NBD_DEVICES_MAX 1024
/* The kernel answers at once; this only bounds a wait that should never happen. */
#define HAST_NL_TIMEOUT_S 5
/* Replies read per request before giving up (a reply plus its ack is two messages). */
#define HAST_NL_REPLIES_MAX 16
#define HAST_NL_BUF_BYTES 8192
#define HAST_NL_IDENTIFIER_BYTES 128

int hast_socketpair(int32_t *out) {
	if (out == NULL) return -EINVAL;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return -errno;
	out[0] = sv[0];
	out[1] = sv[1];
	return 0;
}

/* A netlink request being built: header, genl header, attributes; nests are patched on close. */
struct hast_nl_msg {
	_Alignas(NLMSG_ALIGNTO) unsigned char buf[HAST_NL_BUF_BYTES];
	size_t used;
	int overflow;
};

static void hast_nl_start(struct hast_nl_msg *m, uint16_t family, uint8_t cmd, uint32_t seq) {
	memset(m, 0, sizeof(*m));
	struct nlmsghdr *h = (struct nlmsghdr *)m->buf;
	h->nlmsg_type = family;
	h->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
	h->nlmsg_seq = seq;
	struct genlmsghdr *g = (struct genlmsghdr *)NLMSG_DATA(h);
	g->cmd = cmd;
	g->version = family == GENL_ID_CTRL ? 1 : HAST_NBD_GENL_VERSION;
	m->used = NLMSG_HDRLEN + GENL_HDRLEN;
}

/* Appends an attribute; returns its offset (for nests) or 0 once the buffer overflowed. */
static size_t hast_nl_put(struct hast_nl_msg *m, uint16_t type, const void *data, size_t len) {
	size_t need = NLA_ALIGN(NLA_HDRLEN + len);
	if (m->overflow || m->used + need > sizeof(m->buf)) {
		m->overflow = 1;
		return 0;
	}
	size_t at = m->used;
	struct nlattr *a = (struct nlattr *)(m->buf + at);
	a->nla_type = type;
	a->nla_len = (uint16_t)(NLA_HDRLEN + len);
	if (len > 0) memcpy(m->buf + at + NLA_HDRLEN, data, len);
	memset(m->buf + at + NLA_HDRLEN + len, 0, need - NLA_HDRLEN - len);
	m->used += need;
	return at;
}

static void hast_nl_put_u32(struct hast_nl_msg *m, uint16_t type, uint32_t v) { hast_nl_put(m, type, &v, sizeof(v)); }
static void hast_nl_put_u64(struct hast_nl_msg *m, uint16_t type, uint64_t v) { hast_nl_put(m, type, &v, sizeof(v)); }

static size_t hast_nl_nest(struct hast_nl_msg *m, uint16_t type) { return hast_nl_put(m, type | NLA_F_NESTED, NULL, 0); }

static void hast_nl_nest_end(struct hast_nl_msg *m, size_t at) {
	if (m->overflow) return;
	((struct nlattr *)(m->buf + at))->nla_len = (uint16_t)(m->used - at);
}

static int hast_nl_open(void) {
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
	if (fd < 0) return -errno;
	struct sockaddr_nl local = {.nl_family = AF_NETLINK};
	struct timeval timeout = {.tv_sec = HAST_NL_TIMEOUT_S};
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout)) < 0 ||
	    bind(fd, (struct sockaddr *)&local, sizeof(local)) < 0) {
		int rc = -errno;
		close(fd);
		return rc;
	}
	return fd;
}

/* Scans the attributes of one genl message for a u16 (CTRL_ATTR_FAMILY_ID) or u32 of `type`. */
static int hast_nl_find_uint(const struct nlmsghdr *h, uint16_t type, uint32_t *out) {
	size_t total = h->nlmsg_len - NLMSG_HDRLEN - GENL_HDRLEN;
	const unsigned char *p = (const unsigned char *)NLMSG_DATA(h) + GENL_HDRLEN;
	while (total >= NLA_HDRLEN) {
		const struct nlattr *a = (const struct nlattr *)p;
		if (a->nla_len < NLA_HDRLEN || a->nla_len > total) return 0;
		size_t len = a->nla_len - NLA_HDRLEN;
		if ((a->nla_type & NLA_TYPE_MASK) == type) {
			if (len == sizeof(uint16_t)) {
				uint16_t v;
				memcpy(&v, p + NLA_HDRLEN, sizeof(v));
				*out = v;
				return 1;
			}
			if (len >= sizeof(uint32_t)) {
				memcpy(out, p + NLA_HDRLEN, sizeof(*out));
				return 1;
			}
		}
		size_t step = NLA_ALIGN(a->nla_len);
		if (step >= total) break;
		p += step;
		total -= step;
	}
	return 0;
}

/*
 * Sends m and reads until the kernel's ack. When want_type is non-zero, the value of that
 * attribute in the reply lands in *value (and its absence is EPROTO). Returns 0 or -errno.
 */
static int hast_nl_call(int fd, struct hast_nl_msg *m, uint16_t want_type, uint32_t *value) {
	if (m->overflow) return -EMSGSIZE;
	struct nlmsghdr *req = (struct nlmsghdr *)m->buf;
	req->nlmsg_len = (uint32_t)m->used;
	struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
	for (;;) {
		if (sendto(fd, m->buf, m->used, 0, (struct sockaddr *)&kernel, sizeof(kernel)) >= 0) break;
		if (errno != EINTR) return -errno;
	}
	int found = 0;
	_Alignas(NLMSG_ALIGNTO) unsigned char buf[HAST_NL_BUF_BYTES];
	for (int reads = 0; reads < HAST_NL_REPLIES_MAX; reads++) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n < 0) {
			if (errno == EINTR) continue;
			return -errno;
		}
		size_t left = (size_t)n;
		for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
			if (h->nlmsg_seq != req->nlmsg_seq) continue;
			if (h->nlmsg_type == NLMSG_ERROR) {
				if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct nlmsgerr))) return -EPROTO;
				const struct nlmsgerr *e = (const struct nlmsgerr *)NLMSG_DATA(h);
				if (e->error != 0) return e->error; /* already negative */
				return want_type == 0 || found ? 0 : -EPROTO;
			}
			if (want_type != 0 && h->nlmsg_type == req->nlmsg_type && hast_nl_find_uint(h, want_type, value)) found = 1;
		}
	}
	return -EPROTO;
}

/* The id of a generic netlink family, -ENOENT when the kernel has no such family. */
static int hast_genl_family_id(int fd, const char *name) {
	struct hast_nl_msg m;
	hast_nl_start(&m, GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1);
	hast_nl_put(&m, CTRL_ATTR_FAMILY_NAME, name, strlen(name) + 1);
	uint32_t id = 0;
	int rc = hast_nl_call(fd, &m, CTRL_ATTR_FAMILY_ID, &id);
	return rc < 0 ? rc : (int)id;
}

/* Same, on a socket of its own: lets tests check the netlink code against "nlctrl" (always there). */
int hast_genl_family(const char *name) {
	if (name == NULL || strlen(name) >= GENL_NAMSIZ) return -EINVAL;
	int fd = hast_nl_open();
	if (fd < 0) return fd;
	int rc = hast_genl_family_id(fd, name);
	close(fd);
	return rc;
}

static int hast_nbd_netlink_connect(int fd, int family, int sock_fd, uint64_t size_bytes, uint64_t block_bytes,
				    uint64_t server_flags, uint64_t timeout_s, const char *identifier) {
	struct hast_nl_msg m;
	hast_nl_start(&m, (uint16_t)family, HAST_NBD_CMD_CONNECT, 2);
	hast_nl_put_u64(&m, HAST_NBD_ATTR_SIZE_BYTES, size_bytes);
	hast_nl_put_u64(&m, HAST_NBD_ATTR_BLOCK_SIZE_BYTES, block_bytes);
	hast_nl_put_u64(&m, HAST_NBD_ATTR_TIMEOUT, timeout_s);
	hast_nl_put_u64(&m, HAST_NBD_ATTR_SERVER_FLAGS, server_flags);
	hast_nl_put_u64(&m, HAST_NBD_ATTR_CLIENT_FLAGS, HAST_NBD_CFLAG_DESTROY_ON_DISCONNECT);
	hast_nl_put(&m, HAST_NBD_ATTR_BACKEND_IDENTIFIER, identifier, strlen(identifier) + 1);
	size_t sockets = hast_nl_nest(&m, HAST_NBD_ATTR_SOCKETS);
	size_t item = hast_nl_nest(&m, HAST_NBD_SOCK_ITEM);
	hast_nl_put_u32(&m, HAST_NBD_SOCK_FD, (uint32_t)sock_fd);
	hast_nl_nest_end(&m, item);
	hast_nl_nest_end(&m, sockets);
	uint32_t index = 0;
	int rc = hast_nl_call(fd, &m, HAST_NBD_ATTR_INDEX, &index);
	if (rc < 0) return rc;
	return index > INT32_MAX ? -EOVERFLOW : (int)index;
}

static int hast_nbd_netlink_disconnect(int fd, int family, int index) {
	struct hast_nl_msg m;
	hast_nl_start(&m, (uint16_t)family, HAST_NBD_CMD_DISCONNECT, 3);
	hast_nl_put_u32(&m, HAST_NBD_ATTR_INDEX, (uint32_t)index);
	return hast_nl_call(fd, &m, 0, NULL);
}

static int hast_nbd_ioctl(int dev_fd, unsigned long request, unsigned long arg) {
	for (;;) {
		if (ioctl(dev_fd, request, arg) == 0) return 0;
		if (errno != EINTR) return -errno;
	}
}

/* NBD_DO_IT blocks until disconnect; the thread then releases the socket and the device. */
static void *hast_nbd_do_it(void *arg) {
	int dev_fd = (int)(intptr_t)arg;
	(void)hast_nbd_ioctl(dev_fd, HAST_NBD_DO_IT, 0);
	(void)hast_nbd_ioctl(dev_fd, HAST_NBD_CLEAR_SOCK, 0);
	close(dev_fd);
	return NULL;
}

/* Configures /dev/nbd<index> and starts NBD_DO_IT; -EBUSY when another client owns it. */
static int hast_nbd_ioctl_connect_one(int index, int sock_fd, uint64_t size_bytes, uint64_t block_bytes,
				      uint64_t server_flags, uint64_t timeout_s) {
	char path[32];
	snprintf(path, sizeof(path), "/dev/nbd%d", index);
	int dev_fd = open(path, O_RDWR | O_CLOEXEC);
	if (dev_fd < 0) return -errno;
	int rc = hast_nbd_ioctl(dev_fd, HAST_NBD_SET_BLKSIZE, (unsigned long)block_bytes);
	if (rc == 0) rc = hast_nbd_ioctl(dev_fd, HAST_NBD_SET_SIZE_BLOCKS, (unsigned long)(size_bytes / block_bytes));
	if (rc == 0) rc = hast_nbd_ioctl(dev_fd, HAST_NBD_CLEAR_SOCK, 0);
	if (rc == 0) (void)hast_nbd_ioctl(dev_fd, HAST_NBD_SET_FLAGS, (unsigned long)server_flags); /* old kernels lack it */
	if (rc == 0) rc = hast_nbd_ioctl(dev_fd, HAST_NBD_SET_TIMEOUT, (unsigned long)timeout_s);
	if (rc == 0) rc = hast_nbd_ioctl(dev_fd, HAST_NBD_SET_SOCK, (unsigned long)sock_fd);
	if (rc < 0) {
		close(dev_fd);
		return rc;
	}
	pthread_attr_t attr;
	pthread_t thread;
	rc = -pthread_attr_init(&attr);
	if (rc == 0) rc = -pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (rc == 0) rc = -pthread_create(&thread, &attr, hast_nbd_do_it, (void *)(intptr_t)dev_fd);
	pthread_attr_destroy(&attr);
	if (rc < 0) {
		(void)hast_nbd_ioctl(dev_fd, HAST_NBD_CLEAR_SOCK, 0);
		close(dev_fd);
		return rc;
	}
	return index;
}

/* The first /dev/nbdN without a client (no /sys/block/nbdN/pid) that accepts our socket. */
static int hast_nbd_ioctl_connect(int sock_fd, uint64_t size_bytes, uint64_t block_bytes, uint64_t server_flags,
				  uint64_t timeout_s) {
	int index = 0;
	for (; index < HAST_NBD_DEVICES_MAX; index++) {
		char path[48];
		snprintf(path, sizeof(path), "/dev/nbd%d", index);
		if (access(path, F_OK) < 0) break;
		snprintf(path, sizeof(path), "/sys/block/nbd%d/pid", index);
		if (access(path, F_OK) == 0) continue;
		int rc = hast_nbd_ioctl_connect_one(index, sock_fd, size_bytes, block_bytes, server_flags, timeout_s);
		if (rc != -EBUSY) return rc;
	}
	return index == 0 ? -ENODEV : -EBUSY; /* no /dev/nbd0 at all: the nbd module is not loaded */
}

/*
 * Gives sock_fd (transmission phase) to a kernel nbd device of size_bytes; returns its index.
 * *via_ioctl is 0 for netlink, 1 for the ioctl fallback. The caller may close sock_fd afterwards:
 * the kernel holds its own reference. -ENODEV: neither the netlink family nor /dev/nbd0 exists.
 */
int hast_nbd_attach(int sock_fd, uint64_t size_bytes, uint64_t block_bytes, uint64_t server_flags,
		    uint32_t timeout_s, const char *identifier, int32_t *via_ioctl) {
	if (sock_fd < 0 || via_ioctl == NULL || identifier == NULL || strlen(identifier) >= HAST_NL_IDENTIFIER_BYTES ||
	    block_bytes < 512 || block_bytes > 4096 || (block_bytes & (block_bytes - 1)) != 0 || size_bytes == 0 ||
	    size_bytes % block_bytes != 0 || size_bytes > INT64_MAX)
		return -EINVAL;
	int nl = hast_nl_open();
	int family = nl < 0 ? nl : hast_genl_family_id(nl, "nbd");
	if (family >= 0) {
		*via_ioctl = 0;
		int rc = hast_nbd_netlink_connect(nl, family, sock_fd, size_bytes, block_bytes, server_flags, timeout_s, identifier);
		close(nl);
		return rc;
	}
	if (nl >= 0) close(nl);
	*via_ioctl = 1;
	return hast_nbd_ioctl_connect(sock_fd, size_bytes, block_bytes, server_flags, timeout_s);
}

/* Disconnects /dev/nbd<index>: netlink NBD_CMD_DISCONNECT, else NBD_DISCONNECT + NBD_CLEAR_SOCK. */
int hast_nbd_detach(int index) {
	if (index < 0) return -EINVAL;
	int nl = hast_nl_open();
	int family = nl < 0 ? nl : hast_genl_family_id(nl, "nbd");
	if (family >= 0) {
		int rc = hast_nbd_netlink_disconnect(nl, family, index);
		close(nl);
		return rc;
	}
	if (nl >= 0) close(nl);
	char path[32];
	snprintf(path, sizeof(path), "/dev/nbd%d", index);
	int dev_fd = open(path, O_RDWR | O_CLOEXEC);
	if (dev_fd < 0) return errno == ENOENT ? -ENODEV : -errno;
	int rc = hast_nbd_ioctl(dev_fd, HAST_NBD_DISCONNECT, 0);
	int cleared = hast_nbd_ioctl(dev_fd, HAST_NBD_CLEAR_SOCK, 0);
	close(dev_fd);
	return rc < 0 ? rc : cleared;
}

#else /* the kernel nbd client exists only on Linux */

int hast_genl_family(const char *name) {
	(void)name;
	return -ENOTSUP;
}

int hast_socketpair(int32_t *out) {
	if (out == NULL) return -EINVAL;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) return -errno;
	for (int i = 0; i < 2; i++) (void)fcntl(sv[i], F_SETFD, FD_CLOEXEC);
	out[0] = sv[0];
	out[1] = sv[1];
	return 0;
}

int hast_nbd_attach(int sock_fd, uint64_t size_bytes, uint64_t block_bytes, uint64_t server_flags,
		    uint32_t timeout_s, const char *identifier, int32_t *via_ioctl) {
	(void)sock_fd, (void)size_bytes, (void)block_bytes, (void)server_flags, (void)timeout_s, (void)identifier,
		(void)via_ioctl;
	return -ENOTSUP;
}

int hast_nbd_detach(int index) {
	(void)index;
	return -ENOTSUP;
}

#endif

/*
 * FreeBSD GEOM Gate (/dev/ggctl; platform.md section 4): the kernel side of /dev/hast/<name>.
 *
 * The structures and ioctl numbers are written out here from the spec instead of taken from
 * <geom/gate/g_gate.h>, so that this part compiles on Linux too and hast_ggate_layout() lets a
 * test check every size, offset and ioctl value against platform.md 4.1/4.2 on any machine.
 * Only fixed-width types are used: pointers and uintptr_t fields are uint64_t, which is their
 * size on the LP64 FreeBSD targets (amd64, arm64); the FreeBSD build asserts LP64.
 *
 * Use (src/gate/ggate.ts): open /dev/ggctl once; hast_ggate_create; one or more threads loop on
 * hast_ggate_start (blocks until the kernel queues a request); hast_ggate_done per request;
 * hast_ggate_destroy at the end. START and DONE may run concurrently on the same descriptor.
 * Runs only on FreeBSD; elsewhere every entry point returns -ENOTSUP. Untested on FreeBSD.
 */
#define HAST_GG_VERSION 3
#define HAST_GG_NAME_GIVEN (-2)
#define HAST_GG_NAME_BYTES 255 /* FreeBSD NAME_MAX */
#define HAST_GG_INFO_BYTES 2048
#define HAST_GG_MAX_QUEUE 4096

/* FreeBSD <sys/ioccom.h>: _IOWR(g, n, t) = IOC_INOUT | (sizeof(t) & IOCPARM_MASK) << 16 | g << 8 | n */
#define HAST_IOC_INOUT 0xc0000000u
#define HAST_IOCPARM_MASK 0x1fffu
#define HAST_IOWR(group, n, size) \
	((uint32_t)(HAST_IOC_INOUT | (((uint32_t)(size) & HAST_IOCPARM_MASK) << 16) | ((uint32_t)(group) << 8) | (n)))

struct hast_gg_create {
	uint32_t gctl_version;
	int64_t gctl_mediasize;
	uint32_t gctl_sectorsize;
	uint32_t gctl_flags;
	uint32_t gctl_maxcount;
	uint32_t gctl_timeout;
	char gctl_name[HAST_GG_NAME_BYTES];
	char gctl_info[HAST_GG_INFO_BYTES];
	char gctl_readprov[HAST_GG_NAME_BYTES];
	int64_t gctl_readoffset;
	int32_t gctl_unit;
};

struct hast_gg_modify {
	uint32_t gctl_version;
	int32_t gctl_unit;
	uint32_t gctl_modify;
	int64_t gctl_mediasize;
	char gctl_info[HAST_GG_INFO_BYTES];
	char gctl_readprov[HAST_GG_NAME_BYTES];
	int64_t gctl_readoffset;
};

struct hast_gg_destroy {
	uint32_t gctl_version;
	int32_t gctl_unit;
	int32_t gctl_force;
	char gctl_name[HAST_GG_NAME_BYTES];
};

struct hast_gg_cancel {
	uint32_t gctl_version;
	int32_t gctl_unit;
	uint64_t gctl_seq; /* uintptr_t */
	char gctl_name[HAST_GG_NAME_BYTES];
};

struct hast_gg_io {
	uint32_t gctl_version;
	int32_t gctl_unit;
	uint64_t gctl_seq; /* uintptr_t */
	uint32_t gctl_cmd;
	int64_t gctl_offset;
	int64_t gctl_length;
	uint64_t gctl_data; /* void * */
	int32_t gctl_error;
};

#define HAST_GG_CMD_CREATE HAST_IOWR('m', 0, sizeof(struct hast_gg_create))
#define HAST_GG_CMD_MODIFY HAST_IOWR('m', 1, sizeof(struct hast_gg_modify))
#define HAST_GG_CMD_DESTROY HAST_IOWR('m', 2, sizeof(struct hast_gg_destroy))
#define HAST_GG_CMD_CANCEL HAST_IOWR('m', 3, sizeof(struct hast_gg_cancel))
#define HAST_GG_CMD_START HAST_IOWR('m', 4, sizeof(struct hast_gg_io))
#define HAST_GG_CMD_DONE HAST_IOWR('m', 5, sizeof(struct hast_gg_io))

/* platform.md 4.1 and 4.2, LP64. */
#define HAST_ASSERT_AT(type, field, offset) \
	_Static_assert(offsetof(struct type, field) == (offset), #type "." #field " is not at " #offset)
_Static_assert(sizeof(struct hast_gg_create) == 2608, "g_gate_ctl_create is 2608 bytes");
HAST_ASSERT_AT(hast_gg_create, gctl_version, 0);
HAST_ASSERT_AT(hast_gg_create, gctl_mediasize, 8);
HAST_ASSERT_AT(hast_gg_create, gctl_sectorsize, 16);
HAST_ASSERT_AT(hast_gg_create, gctl_flags, 20);
HAST_ASSERT_AT(hast_gg_create, gctl_maxcount, 24);
HAST_ASSERT_AT(hast_gg_create, gctl_timeout, 28);
HAST_ASSERT_AT(hast_gg_create, gctl_name, 32);
HAST_ASSERT_AT(hast_gg_create, gctl_info, 287);
HAST_ASSERT_AT(hast_gg_create, gctl_readprov, 2335);
HAST_ASSERT_AT(hast_gg_create, gctl_readoffset, 2592);
HAST_ASSERT_AT(hast_gg_create, gctl_unit, 2600);
_Static_assert(sizeof(struct hast_gg_modify) == 2336, "g_gate_ctl_modify is 2336 bytes");
HAST_ASSERT_AT(hast_gg_modify, gctl_modify, 8);
HAST_ASSERT_AT(hast_gg_modify, gctl_mediasize, 16);
HAST_ASSERT_AT(hast_gg_modify, gctl_info, 24);
HAST_ASSERT_AT(hast_gg_modify, gctl_readprov, 2072);
HAST_ASSERT_AT(hast_gg_modify, gctl_readoffset, 2328);
_Static_assert(sizeof(struct hast_gg_destroy) == 268, "g_gate_ctl_destroy is 268 bytes");
HAST_ASSERT_AT(hast_gg_destroy, gctl_force, 8);
HAST_ASSERT_AT(hast_gg_destroy, gctl_name, 12);
_Static_assert(sizeof(struct hast_gg_cancel) == 272, "g_gate_ctl_cancel is 272 bytes");
HAST_ASSERT_AT(hast_gg_cancel, gctl_seq, 8);
HAST_ASSERT_AT(hast_gg_cancel, gctl_name, 16);
_Static_assert(sizeof(struct hast_gg_io) == 56, "g_gate_ctl_io is 56 bytes");
HAST_ASSERT_AT(hast_gg_io, gctl_unit, 4);
HAST_ASSERT_AT(hast_gg_io, gctl_seq, 8);
HAST_ASSERT_AT(hast_gg_io, gctl_cmd, 16);
HAST_ASSERT_AT(hast_gg_io, gctl_offset, 24);
HAST_ASSERT_AT(hast_gg_io, gctl_length, 32);
HAST_ASSERT_AT(hast_gg_io, gctl_data, 40);
HAST_ASSERT_AT(hast_gg_io, gctl_error, 48);
_Static_assert(HAST_GG_CMD_CREATE == 0xca306d00u, "G_GATE_CMD_CREATE");
_Static_assert(HAST_GG_CMD_MODIFY == 0xc9206d01u, "G_GATE_CMD_MODIFY");
_Static_assert(HAST_GG_CMD_DESTROY == 0xc10c6d02u, "G_GATE_CMD_DESTROY");
_Static_assert(HAST_GG_CMD_CANCEL == 0xc1106d03u, "G_GATE_CMD_CANCEL");
_Static_assert(HAST_GG_CMD_START == 0xc0386d04u, "G_GATE_CMD_START");
_Static_assert(HAST_GG_CMD_DONE == 0xc0386d05u, "G_GATE_CMD_DONE");

/*
 * Writes "key=value\n" lines (sizes, offsets, ioctl numbers, constants) as compiled; returns the
 * length needed (call again with more room if larger). Keys: <struct>.size, <struct>.<field>,
 * ioctl.<command>, const.<name>.
 */
int hast_ggate_layout(char *buf, size_t len) {
#define HAST_SIZE(type) {#type ".size", sizeof(struct hast_gg_##type)}
#define HAST_AT(type, field) {#type "." #field, offsetof(struct hast_gg_##type, field)}
	static const struct {
		const char *key;
		uint64_t value;
	} entries[] = {
		HAST_SIZE(create), HAST_AT(create, gctl_version), HAST_AT(create, gctl_mediasize),
		HAST_AT(create, gctl_sectorsize), HAST_AT(create, gctl_flags), HAST_AT(create, gctl_maxcount),
		HAST_AT(create, gctl_timeout), HAST_AT(create, gctl_name), HAST_AT(create, gctl_info),
		HAST_AT(create, gctl_readprov), HAST_AT(create, gctl_readoffset), HAST_AT(create, gctl_unit),
		HAST_SIZE(modify), HAST_AT(modify, gctl_version), HAST_AT(modify, gctl_unit),
		HAST_AT(modify, gctl_modify), HAST_AT(modify, gctl_mediasize), HAST_AT(modify, gctl_info),
		HAST_AT(modify, gctl_readprov), HAST_AT(modify, gctl_readoffset),
		HAST_SIZE(destroy), HAST_AT(destroy, gctl_version), HAST_AT(destroy, gctl_unit),
		HAST_AT(destroy, gctl_force), HAST_AT(destroy, gctl_name),
		HAST_SIZE(cancel), HAST_AT(cancel, gctl_version), HAST_AT(cancel, gctl_unit),
		HAST_AT(cancel, gctl_seq), HAST_AT(cancel, gctl_name),
		HAST_SIZE(io), HAST_AT(io, gctl_version), HAST_AT(io, gctl_unit), HAST_AT(io, gctl_seq),
		HAST_AT(io, gctl_cmd), HAST_AT(io, gctl_offset), HAST_AT(io, gctl_length),
		HAST_AT(io, gctl_data), HAST_AT(io, gctl_error),
		{"ioctl.create", HAST_GG_CMD_CREATE}, {"ioctl.modify", HAST_GG_CMD_MODIFY},
		{"ioctl.destroy", HAST_GG_CMD_DESTROY}, {"ioctl.cancel", HAST_GG_CMD_CANCEL},
		{"ioctl.start", HAST_GG_CMD_START}, {"ioctl.done", HAST_GG_CMD_DONE},
		{"const.version", HAST_GG_VERSION}, {"const.name_bytes", HAST_GG_NAME_BYTES},
		{"const.info_bytes", HAST_GG_INFO_BYTES},
	};
#undef HAST_SIZE
#undef HAST_AT
	size_t used = 0;
	for (size_t i = 0; i < sizeof(entries) / sizeof(entries[0]); i++) {
		int rc = hast_append_line(buf, len, &used, entries[i].key, (unsigned long long)entries[i].value);
		if (rc < 0) return rc;
	}
	if (buf != NULL && used < len) buf[used] = '\0';
	return (int)used;
}

#ifdef __FreeBSD__
_Static_assert(sizeof(void *) == 8 && sizeof(off_t) == 8, "GEOM Gate layouts here are LP64 (amd64, arm64)");

/* Copies a provider name ("hast/<provname>") into a gctl_name field; EINVAL if empty or too long. */
static int hast_gg_name(char dst[HAST_GG_NAME_BYTES], const char *name) {
	if (name == NULL) return -EINVAL;
	size_t n = strlen(name);
	if (n == 0 || n >= HAST_GG_NAME_BYTES) return -EINVAL;
	memcpy(dst, name, n + 1);
	return 0;
}

static int hast_gg_ioctl(int ctl_fd, uint32_t request, void *arg) {
	for (;;) {
		if (ioctl(ctl_fd, (unsigned long)request, arg) == 0) return 0;
		if (errno != EINTR) return -errno;
	}
}

/*
 * Takes over /dev/<name> left by a crashed predecessor: CANCEL with NAME_GIVEN requeues its
 * outstanding requests and returns the unit (as hastd's init_ggate does on EEXIST).
 */
int hast_ggate_cancel(int ctl_fd, const char *name) {
	struct hast_gg_cancel cancel;
	memset(&cancel, 0, sizeof(cancel));
	cancel.gctl_version = HAST_GG_VERSION;
	cancel.gctl_unit = HAST_GG_NAME_GIVEN;
	cancel.gctl_seq = 0; /* every outstanding request */
	int rc = hast_gg_name(cancel.gctl_name, name);
	if (rc < 0) return rc;
	rc = hast_gg_ioctl(ctl_fd, HAST_GG_CMD_CANCEL, &cancel);
	return rc < 0 ? rc : cancel.gctl_unit;
}

/*
 * Creates /dev/<name> (e.g. "hast/shared") of media_bytes; returns the unit. *recovered is set
 * to 1 when the device already existed and was taken over with CANCEL, else 0.
 */
int hast_ggate_create(int ctl_fd, const char *name, uint64_t media_bytes, uint32_t sector_bytes,
		      uint32_t timeout_s, int32_t *recovered) {
	if (recovered == NULL || sector_bytes == 0 || (sector_bytes & (sector_bytes - 1)) != 0 ||
	    media_bytes == 0 || media_bytes % sector_bytes != 0 || media_bytes > INT64_MAX)
		return -EINVAL;
	struct hast_gg_create create;
	memset(&create, 0, sizeof(create));
	create.gctl_version = HAST_GG_VERSION;
	create.gctl_mediasize = (int64_t)media_bytes;
	create.gctl_sectorsize = sector_bytes;
	create.gctl_flags = 0;
	create.gctl_maxcount = 0; /* unlimited: the daemon bounds its own in-flight requests */
	create.gctl_timeout = timeout_s;
	create.gctl_unit = HAST_GG_NAME_GIVEN;
	int rc = hast_gg_name(create.gctl_name, name);
	if (rc < 0) return rc;
	snprintf(create.gctl_info, sizeof(create.gctl_info), "hast on Bun: %s", name);
	*recovered = 0;
	rc = hast_gg_ioctl(ctl_fd, HAST_GG_CMD_CREATE, &create);
	if (rc == 0) return create.gctl_unit;
	if (rc != -EEXIST) return rc;
	*recovered = 1;
	return hast_ggate_cancel(ctl_fd, name);
}

/*
 * Blocks until the kernel hands over a request, into io (a struct g_gate_ctl_io of 56 bytes owned
 * by the caller) with data (capacity_bytes) for WRITE payloads. Returns 0 with a request in io,
 * the kernel's gctl_error when positive (ECANCELED: device destroyed, stop; ENOMEM: a WRITE needs
 * gctl_length bytes, retry with a larger buffer), or -errno when the ioctl fails.
 */
int hast_ggate_start(int ctl_fd, int unit, void *io, void *data, uint64_t capacity_bytes) {
	if (io == NULL || data == NULL || capacity_bytes == 0 || capacity_bytes > INT64_MAX) return -EINVAL;
	struct hast_gg_io *gio = io;
	memset(gio, 0, sizeof(*gio));
	gio->gctl_version = HAST_GG_VERSION;
	gio->gctl_unit = unit;
	gio->gctl_length = (int64_t)capacity_bytes;
	gio->gctl_data = (uint64_t)(uintptr_t)data;
	gio->gctl_error = 0;
	int rc = hast_gg_ioctl(ctl_fd, HAST_GG_CMD_START, gio);
	return rc < 0 ? rc : gio->gctl_error;
}

/*
 * Completes the request in io (as filled by START) with error (0 or a FreeBSD errno; EAGAIN
 * requeues it). For a READ, data holds gctl_length bytes the kernel copies out.
 */
int hast_ggate_done(int ctl_fd, void *io, int error, void *data) {
	if (io == NULL || data == NULL || error < 0) return -EINVAL;
	struct hast_gg_io *gio = io;
	gio->gctl_version = HAST_GG_VERSION;
	gio->gctl_error = error;
	gio->gctl_data = (uint64_t)(uintptr_t)data;
	return hast_gg_ioctl(ctl_fd, HAST_GG_CMD_DONE, gio);
}

/* Destroys the unit; with force, queued requests fail ENXIO and blocked STARTs get ECANCELED. */
int hast_ggate_destroy(int ctl_fd, int unit, int force) {
	struct hast_gg_destroy destroy;
	memset(&destroy, 0, sizeof(destroy));
	destroy.gctl_version = HAST_GG_VERSION;
	destroy.gctl_unit = unit;
	destroy.gctl_force = force != 0;
	return hast_gg_ioctl(ctl_fd, HAST_GG_CMD_DESTROY, &destroy);
}

#else /* GEOM Gate exists only on FreeBSD: the layouts above still compile and are checked. */

int hast_ggate_cancel(int ctl_fd, const char *name) {
	(void)ctl_fd, (void)name;
	return -ENOTSUP;
}

int hast_ggate_create(int ctl_fd, const char *name, uint64_t media_bytes, uint32_t sector_bytes,
		      uint32_t timeout_s, int32_t *recovered) {
	(void)ctl_fd, (void)name, (void)media_bytes, (void)sector_bytes, (void)timeout_s, (void)recovered;
	return -ENOTSUP;
}

int hast_ggate_start(int ctl_fd, int unit, void *io, void *data, uint64_t capacity_bytes) {
	(void)ctl_fd, (void)unit, (void)io, (void)data, (void)capacity_bytes;
	return -ENOTSUP;
}

int hast_ggate_done(int ctl_fd, void *io, int error, void *data) {
	(void)ctl_fd, (void)io, (void)error, (void)data;
	return -ENOTSUP;
}

int hast_ggate_destroy(int ctl_fd, int unit, int force) {
	(void)ctl_fd, (void)unit, (void)force;
	return -ENOTSUP;
}

#endif
