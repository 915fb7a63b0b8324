/*
 * ggate.c: the native half of hast on Bun, loaded only by src/native.ts through bun:ffi.
 *
 * What lives here: what Bun cannot do itself on a local component (a regular file or a disk
 * device): open with O_DIRECT, positional I/O straight into caller buffers, flush, discard,
 * zero range, media and sector size, advisory locking; plus the entry points of the kernel
 * frontends (Linux nbd, FreeBSD GEOM Gate) that later issues fill in.
 *
 * Conventions:
 *   - every function returns a value >= 0 on success and -errno on failure; errno itself is
 *     never left for the caller to read (bun:ffi cannot read it reliably);
 *   - no function keeps state between calls and none allocates: buffers belong to the caller;
 *   - every loop either makes progress or returns, so none can spin.
 *
 * Platform code sits behind #ifdef __linux__ / __FreeBSD__; the rest is POSIX.
 */
#define _GNU_SOURCE /* Linux: O_DIRECT, fallocate(), FALLOC_FL_* */

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#ifdef __linux__
#include <linux/falloc.h>
#include <linux/fs.h>
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

int hast_native_version(void) { return 2; }

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

int hast_fdatasync(int fd) { return fdatasync(fd) < 0 ? -errno : 0; }

int hast_fsync(int fd) { return fsync(fd) < 0 ? -errno : 0; }

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

/* Fallback for zero range: plain writes of zeroes, clamped to limit_bytes (the file size). */
static int hast_write_zeroes(int fd, int64_t offset, int64_t length, int64_t limit_bytes) {
	int64_t end = offset + length < limit_bytes ? offset + length : limit_bytes;
	while (offset < end) {
		int64_t want = end - offset < HAST_ZERO_CHUNK_BYTES ? end - offset : HAST_ZERO_CHUNK_BYTES;
		int64_t n = hast_pwrite(fd, hast_zeroes, (uint64_t)want, offset);
		if (n < 0) return (int)n;
		offset += n;
	}
	return 0;
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
	int64_t limit_bytes = hast_media_size(fd);
	if (limit_bytes < 0) return (int)limit_bytes;
	return hast_write_zeroes(fd, offset, length, limit_bytes);
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

/* Writes "NAME=value\n" lines; returns the length needed (call again with more room if larger). */
int hast_errno_table(char *buf, size_t len) {
	size_t used = 0;
	for (size_t i = 0; i < sizeof(hast_errnos) / sizeof(hast_errnos[0]); i++) {
		char line[64];
		int n = snprintf(line, sizeof(line), "%s=%d\n", hast_errnos[i].name, hast_errnos[i].value);
		if (n < 0 || (size_t)n >= sizeof(line)) return -EOVERFLOW;
		if (buf != NULL && used + (size_t)n < len) memcpy(buf + used, line, (size_t)n);
		used += (size_t)n;
	}
	if (buf != NULL && used < len) buf[used] = '\0';
	return (int)used;
}

/*
 * Linux kernel NBD attach (netlink NBD_CMD_CONNECT, ioctl fallback; platform.md section 3).
 * Filled in by issue 3 (daemon and /dev/hast/<name>); until then it refuses honestly.
 */
int hast_nbd_attach(int sock_fd, uint64_t size_bytes, uint32_t block_bytes, uint64_t server_flags,
		    uint32_t timeout_s) {
	(void)sock_fd, (void)size_bytes, (void)block_bytes, (void)server_flags, (void)timeout_s;
	return -ENOTSUP;
}

int hast_nbd_detach(int index) {
	(void)index;
	return -ENOTSUP;
}

/*
 * FreeBSD GEOM Gate (/dev/ggctl: G_GATE_CMD_CREATE/START/DONE/CANCEL/DESTROY; platform.md
 * section 4). Filled in by issue 5 (ops and failover); until then it refuses honestly.
 */
int hast_ggate_create(const char *name, uint64_t media_bytes, uint32_t sector_bytes, uint32_t timeout_s) {
	(void)name, (void)media_bytes, (void)sector_bytes, (void)timeout_s;
	return -ENOTSUP;
}

int hast_ggate_start(int unit, void *io) {
	(void)unit, (void)io;
	return -ENOTSUP;
}

int hast_ggate_done(int unit, void *io) {
	(void)unit, (void)io;
	return -ENOTSUP;
}

int hast_ggate_cancel(const char *name) {
	(void)name;
	return -ENOTSUP;
}

int hast_ggate_destroy(int unit, int force) {
	(void)unit, (void)force;
	return -ENOTSUP;
}
