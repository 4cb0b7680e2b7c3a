/*
 * datamover_fuse._native: reads served from the mount's block cache in C, on threads.
 *
 * Why: a random reader (fio, HDF5, SQLite) hitting the mount's block cache costs one
 * FUSE request per 64 KiB, and pyfuse3 answers every request on one Python thread
 * (receive, dispatch to a coroutine, the cache lookup, the CRC32C check, the reply).
 * That thread was the limit of the four-job fio row (issue #23).
 *
 * What: this module puts its own functions in front of four of libfuse's
 * (fuse_session_new, fuse_session_fd, fuse_session_receive_buf, fuse_session_destroy)
 * for the session pyfuse3 creates; it must be loaded RTLD_GLOBAL before pyfuse3 (see
 * native.py). With ``threads`` > 0 its reader threads take every request from
 * /dev/fuse. A READ whose bytes are all in the block cache, for a handle the Python
 * side has bound to that object version, is answered here: pread of the cached
 * blocks, each block's CRC32C checked against the index, the reply written to
 * /dev/fuse. Every other request (and a READ that misses, or whose check fails) is
 * handed to pyfuse3 unchanged: the hand-off queue (``QUEUE_MAX`` requests) feeds an
 * eventfd that pyfuse3 waits on in place of /dev/fuse, and fuse_session_receive_buf
 * gives it the next queued request. With ``threads`` == 0 the READ callback does the
 * same check inline on pyfuse3's thread.
 *
 * The Python side (blocks.py) mirrors its block index here (set_block, clear_block,
 * drop) and binds a handle to a version (bind) only after its own checks said that
 * handle reads that version; anything that may change what a handle reads unbinds
 * every handle (unbind_all), and the next READ goes through Python again. A block is
 * served only if its bytes match the CRC32C the index holds for it; anything else is
 * a miss and Python answers (and drops the block).
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>

/* ---- the kernel protocol (linux/fuse.h, stable ABI) ------------------------------ */

struct k_in_header {
    uint32_t len;
    uint32_t opcode;
    uint64_t unique;
    uint64_t nodeid;
    uint32_t uid, gid, pid;
    uint16_t total_extlen;
    uint16_t padding;
};
struct k_read_in {
    uint64_t fh;
    uint64_t offset;
    uint32_t size;
    uint32_t read_flags;
    uint64_t lock_owner;
    uint32_t flags;
    uint32_t padding;
};
struct k_out_header {
    uint32_t len;
    int32_t error;
    uint64_t unique;
};
#define K_FUSE_READ 15

/* A request is at most max_write (libfuse caps it at 256 pages) plus headers. */
#define REQ_BUF (256 * 4096 + 4096 * 2)
/* Requests handed to pyfuse3 and not yet taken: the reader threads wait when full. */
#define QUEUE_MAX 1024
/* Bytes one READ may ask for (the kernel's max_read / max_pages bound it further). */
#define SCRATCH (REQ_BUF + 2 * 65536)
/* Blocks one READ may span and still be served here. */
#define SPAN_MAX 64
/* Cache files this module keeps open; beyond it a hit opens and closes its file. */
#define OPEN_MAX 256
#define THREADS_MAX 8

/* ---- CRC32C ------------------------------------------------------------------------ */

static uint32_t crc_table[256];

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[i] = c;
    }
}

static uint32_t crc_soft(const unsigned char *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    while (n--)
        c = crc_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc_hw(const unsigned char *p, size_t n) {
    /* One stream of 8-byte steps: ~8 us for a 64 KiB block on this machine's CPU. */
    uint64_t c = 0xFFFFFFFFu;
    while (n && ((uintptr_t)p & 7)) {
        c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
        n--;
    }
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
        p += 8;
        n -= 8;
    }
    while (n--)
        c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
    return (uint32_t)c ^ 0xFFFFFFFFu;
}
#endif

static uint32_t (*crc32c)(const unsigned char *, size_t) = crc_soft;

/* ---- the mirror of the block index ------------------------------------------------- */

struct slot {
    uint64_t index; /* EMPTY or TOMB when unused */
    uint32_t crc;
    uint32_t len;
    atomic_uchar ref; /* served since the Python side last asked (its CLOCK bit) */
};
#define EMPTY UINT64_MAX
#define TOMB (UINT64_MAX - 1)

struct version {
    char *name;
    char *path;
    uint64_t size;
    uint32_t block;
    atomic_int fd; /* -1 until the first hit opens it */
    int dead;      /* dropped: served no more; freed when no binding holds it */
    int bindings;
    struct slot *slots;
    size_t cap, used, tombs;
    struct version *next; /* hash chain */
};

struct binding {
    uint64_t fh;
    struct version *v;
    struct binding *next;
};

#define VBUCKETS 1024
#define BBUCKETS 1024
static struct version *versions[VBUCKETS];
static struct binding *bindings[BBUCKETS];
static pthread_rwlock_t lock;
static atomic_int open_fds;

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211ull;
    return h;
}

static struct slot *slot_find(struct version *v, uint64_t index) {
    if (!v->cap)
        return NULL;
    size_t mask = v->cap - 1, i = (size_t)(index * 0x9E3779B97F4A7C15ull) & mask;
    for (;;) {
        struct slot *s = &v->slots[i];
        if (s->index == index)
            return s;
        if (s->index == EMPTY)
            return NULL;
        i = (i + 1) & mask;
    }
}

static int slot_grow(struct version *v) {
    size_t cap = v->cap ? v->cap * 2 : 64;
    if (v->used * 4 < v->cap) /* mostly tombstones: rebuild at the same size */
        cap = v->cap;
    struct slot *slots = malloc(cap * sizeof *slots);
    if (!slots)
        return -1;
    for (size_t i = 0; i < cap; i++)
        slots[i].index = EMPTY;
    for (size_t j = 0; j < v->cap; j++) {
        struct slot *o = &v->slots[j];
        if (o->index >= TOMB)
            continue;
        size_t i = (size_t)(o->index * 0x9E3779B97F4A7C15ull) & (cap - 1);
        while (slots[i].index != EMPTY)
            i = (i + 1) & (cap - 1);
        slots[i].index = o->index;
        slots[i].crc = o->crc;
        slots[i].len = o->len;
        atomic_store(&slots[i].ref, atomic_load(&o->ref));
    }
    free(v->slots);
    v->slots = slots;
    v->cap = cap;
    v->tombs = 0;
    return 0;
}

static int slot_put(struct version *v, uint64_t index, uint32_t crc, uint32_t len) {
    struct slot *s = slot_find(v, index);
    if (!s) {
        if ((v->used + v->tombs + 1) * 2 > v->cap && slot_grow(v) < 0)
            return -1;
        size_t mask = v->cap - 1, i = (size_t)(index * 0x9E3779B97F4A7C15ull) & mask;
        while (v->slots[i].index < TOMB)
            i = (i + 1) & mask;
        s = &v->slots[i];
        if (s->index == TOMB)
            v->tombs--;
        v->used++;
        s->index = index;
    }
    s->crc = crc;
    s->len = len;
    atomic_store(&s->ref, 0);
    return 0;
}

static void slot_del(struct version *v, uint64_t index) {
    struct slot *s = slot_find(v, index);
    if (s) {
        s->index = TOMB;
        v->used--;
        v->tombs++;
    }
}

static struct version *version_get(const char *name) {
    for (struct version *v = versions[hash_str(name) % VBUCKETS]; v; v = v->next)
        if (!strcmp(v->name, name))
            return v;
    return NULL;
}

static void version_free(struct version *v) {
    int fd = atomic_exchange(&v->fd, -1);
    if (fd >= 0) {
        close(fd);
        atomic_fetch_sub(&open_fds, 1);
    }
    free(v->slots);
    free(v->name);
    free(v->path);
    free(v);
}

/* Under the write lock. */
static struct version *version_make(const char *name, const char *path, uint64_t size,
                                    uint32_t block) {
    struct version *v = version_get(name);
    if (v)
        return v;
    v = calloc(1, sizeof *v);
    if (!v)
        return NULL;
    v->name = strdup(name);
    v->path = strdup(path);
    if (!v->name || !v->path) {
        free(v->name);
        free(v->path);
        free(v);
        return NULL;
    }
    v->size = size;
    v->block = block;
    atomic_init(&v->fd, -1);
    uint64_t h = hash_str(name) % VBUCKETS;
    v->next = versions[h];
    versions[h] = v;
    return v;
}

/* Under the write lock: out of the table; freed now or by its last unbind. */
static void version_drop(struct version *v) {
    struct version **p = &versions[hash_str(v->name) % VBUCKETS];
    while (*p && *p != v)
        p = &(*p)->next;
    if (*p)
        *p = v->next;
    v->dead = 1;
    int fd = atomic_exchange(&v->fd, -1);
    if (fd >= 0) {
        close(fd);
        atomic_fetch_sub(&open_fds, 1);
    }
    if (!v->bindings)
        version_free(v);
}

static void unbind_locked(uint64_t fh) {
    struct binding **p = &bindings[fh % BBUCKETS];
    while (*p) {
        struct binding *b = *p;
        if (b->fh == fh) {
            *p = b->next;
            struct version *v = b->v;
            free(b);
            if (--v->bindings == 0 && v->dead)
                version_free(v);
            return;
        }
        p = &b->next;
    }
}

static void unbind_all_locked(void) {
    for (size_t h = 0; h < BBUCKETS; h++) {
        while (bindings[h]) {
            struct binding *b = bindings[h];
            bindings[h] = b->next;
            if (--b->v->bindings == 0 && b->v->dead)
                version_free(b->v);
            free(b);
        }
    }
}

/* Every binding and every mirrored block forgotten. */
static void forget_all(void) {
    pthread_rwlock_wrlock(&lock);
    unbind_all_locked();
    for (size_t h = 0; h < VBUCKETS; h++)
        while (versions[h])
            version_drop(versions[h]);
    pthread_rwlock_unlock(&lock);
}

/* ---- serving a READ ---------------------------------------------------------------- */

static atomic_ullong st_hits, st_misses, st_bad, st_handed, st_replies_failed;

/* The reply's bytes for READ(fh, off, size) if the cache holds them all and they check
   out: returns their length and sets *out (inside scratch); -1 for anything else.
   ``nowait``: do not wait for the disk (pyfuse3's own thread must not block). */
static ssize_t serve(uint64_t fh, uint64_t off, uint32_t size, char *scratch, char **out,
                     int nowait) {
    uint32_t crcs[SPAN_MAX], lens[SPAN_MAX];
    struct slot *slots[SPAN_MAX];
    pthread_rwlock_rdlock(&lock);
    struct binding *b = bindings[fh % BBUCKETS];
    while (b && b->fh != fh)
        b = b->next;
    struct version *v = b ? b->v : NULL;
    if (!v || v->dead || off >= v->size || !size)
        goto miss;
    uint64_t end = off + size < v->size ? off + size : v->size;
    uint64_t block = v->block, first = off / block, last = (end - 1) / block;
    uint64_t count = last - first + 1;
    uint64_t start = first * block;
    uint64_t stop = (last + 1) * block < v->size ? (last + 1) * block : v->size;
    size_t span = (size_t)(stop - start);
    if (count > SPAN_MAX || span > SCRATCH)
        goto miss;
    for (uint64_t j = 0; j < count; j++) {
        struct slot *s = slot_find(v, first + j);
        if (!s)
            goto miss;
        slots[j] = s;
        crcs[j] = s->crc;
        lens[j] = s->len;
    }
    int fd = atomic_load(&v->fd), own = 0;
    if (fd < 0) {
        fd = open(v->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
            goto miss;
        int expect = -1;
        if (atomic_fetch_add(&open_fds, 1) < OPEN_MAX &&
            atomic_compare_exchange_strong(&v->fd, &expect, fd)) {
            /* kept: closed by version_drop / version_free */
        } else {
            atomic_fetch_sub(&open_fds, 1);
            own = 1;
        }
    }
    struct iovec iov = {scratch, span};
    ssize_t got = preadv2(fd, &iov, 1, (off_t)start, nowait ? RWF_NOWAIT : 0);
    if (own)
        close(fd);
    if (got != (ssize_t)span)
        goto miss;
    for (uint64_t j = 0; j < count; j++) {
        size_t at = (size_t)(j * block), n = span - at < block ? span - at : block;
        if (lens[j] != n || crc32c((unsigned char *)scratch + at, n) != crcs[j]) {
            atomic_fetch_add(&st_bad, 1);
            goto miss;
        }
    }
    for (uint64_t j = 0; j < count; j++)
        atomic_store(&slots[j]->ref, 1);
    pthread_rwlock_unlock(&lock);
    atomic_fetch_add(&st_hits, 1);
    *out = scratch + (off - start);
    return (ssize_t)(end - off);
miss:
    pthread_rwlock_unlock(&lock);
    atomic_fetch_add(&st_misses, 1);
    return -1;
}

/* ---- libfuse, interposed ----------------------------------------------------------- */

typedef struct fuse_session *(*new_fn)(struct fuse_args *, const struct fuse_lowlevel_ops *,
                                       size_t, void *);
typedef int (*fd_fn)(struct fuse_session *);
typedef int (*recv_fn)(struct fuse_session *, struct fuse_buf *);
typedef void (*destroy_fn)(struct fuse_session *);
typedef void (*exit_fn)(struct fuse_session *);
typedef void (*read_fn)(fuse_req_t, fuse_ino_t, size_t, off_t, struct fuse_file_info *);
typedef int (*reply_fn)(fuse_req_t, const char *, size_t);

static void *libfuse;
static new_fn real_new;
static fd_fn real_fd;
static recv_fn real_recv;
static destroy_fn real_destroy;
static exit_fn real_exit;
static reply_fn real_reply;

static int load_real(void) {
    if (real_new)
        return 0;
    libfuse = dlopen("libfuse3.so.3", RTLD_NOW | RTLD_LOCAL);
    if (!libfuse)
        return -1;
#define REAL(var, type, name)                                                               \
    var = (type)dlvsym(libfuse, name, "FUSE_3.0");                                          \
    if (!var)                                                                               \
        var = (type)dlsym(libfuse, name);
    REAL(real_fd, fd_fn, "fuse_session_fd")
    REAL(real_recv, recv_fn, "fuse_session_receive_buf")
    REAL(real_destroy, destroy_fn, "fuse_session_destroy")
    REAL(real_exit, exit_fn, "fuse_session_exit")
    REAL(real_reply, reply_fn, "fuse_reply_buf")
    REAL(real_new, new_fn, "fuse_session_new")
#undef REAL
    return real_new && real_fd && real_recv && real_destroy && real_exit && real_reply ? 0 : -1;
}

static int want_threads = -1; /* -1: not configured: pass everything through */
static struct fuse_session *our_se;
static struct fuse_lowlevel_ops our_ops;
static read_fn py_read;
static int dev_fd = -1, queue_fd = -1, stop_fd = -1, started;
static pthread_t threads[THREADS_MAX];
static int nthreads;
static atomic_int stopping;

/* The hand-off queue: requests for pyfuse3, in arrival order. */
struct item {
    char *mem;
    size_t len;
};
static struct item queue[QUEUE_MAX];
static size_t q_head, q_count;
static int q_end; /* 0, or the reader's final state: 1 (unmounted) or -errno */
static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_room = PTHREAD_COND_INITIALIZER;

static void queue_end(int how) {
    pthread_mutex_lock(&q_lock);
    if (!q_end)
        q_end = how;
    pthread_mutex_unlock(&q_lock);
    uint64_t one = 1;
    ssize_t ignored = write(queue_fd, &one, sizeof one); /* stays readable from now on */
    (void)ignored;
}

static int queue_put(char *mem, size_t len) {
    pthread_mutex_lock(&q_lock);
    while (q_count == QUEUE_MAX && !atomic_load(&stopping))
        pthread_cond_wait(&q_room, &q_lock);
    if (atomic_load(&stopping)) {
        pthread_mutex_unlock(&q_lock);
        free(mem);
        return -1;
    }
    queue[(q_head + q_count) % QUEUE_MAX] = (struct item){mem, len};
    q_count++;
    pthread_mutex_unlock(&q_lock);
    uint64_t one = 1;
    ssize_t ignored = write(queue_fd, &one, sizeof one);
    (void)ignored;
    atomic_fetch_add(&st_handed, 1);
    return 0;
}

static void reply_read(const struct k_in_header *h, const char *data, size_t n, int error) {
    struct k_out_header out = {(uint32_t)(sizeof out + n), error, h->unique};
    struct iovec iov[2] = {{&out, sizeof out}, {(void *)data, n}};
    ssize_t w = writev(dev_fd, iov, n ? 2 : 1);
    if (w < 0 && errno != ENOENT) /* ENOENT: the request was interrupted meanwhile */
        atomic_fetch_add(&st_replies_failed, 1);
}

static void *reader(void *arg) {
    (void)arg;
    char *buf = malloc(REQ_BUF), *scratch = malloc(SCRATCH);
    struct pollfd fds[2] = {{dev_fd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
    int end = 0;
    while (buf && scratch && !atomic_load(&stopping)) {
        ssize_t n = read(dev_fd, buf, REQ_BUF);
        if (n < 0) {
            if (errno == EAGAIN) {
                poll(fds, 2, -1);
                continue;
            }
            if (errno == EINTR || errno == ENOENT)
                continue;
            end = errno == ENODEV ? 1 : -errno;
            break;
        }
        if (n == 0) {
            end = 1;
            break;
        }
        const struct k_in_header *h = (const void *)buf;
        if ((size_t)n >= sizeof *h + sizeof(struct k_read_in) && h->opcode == K_FUSE_READ) {
            const struct k_read_in *r = (const void *)(buf + sizeof *h);
            char *data;
            ssize_t len = serve(r->fh, r->offset, r->size, scratch, &data, 0);
            if (len >= 0) {
                reply_read(h, data, (size_t)len, 0);
                continue;
            }
        }
        char *mem;
        if (n <= 65536) {
            mem = malloc((size_t)n);
            if (mem)
                memcpy(mem, buf, (size_t)n);
        } else { /* a large WRITE: hand over the buffer itself, take a new one */
            mem = buf;
            buf = malloc(REQ_BUF);
        }
        if (!mem) {
            end = -ENOMEM;
            break;
        }
        if (queue_put(mem, (size_t)n) < 0)
            break;
    }
    if (!buf || !scratch)
        end = -ENOMEM;
    free(buf);
    free(scratch);
    if (end)
        queue_end(end);
    return NULL;
}

static void fast_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                      struct fuse_file_info *fi) {
    static char *scratch;
    if (!scratch)
        scratch = malloc(SCRATCH);
    char *data;
    ssize_t len = scratch && size <= UINT32_MAX
                      ? serve(fi->fh, (uint64_t)off, (uint32_t)size, scratch, &data, 1)
                      : -1;
    if (len >= 0) {
        real_reply(req, data, (size_t)len);
        return;
    }
    py_read(req, ino, size, off, fi);
}

static void start_threads(struct fuse_session *se) {
    dev_fd = real_fd(se);
    queue_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK | EFD_SEMAPHORE);
    stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    int flags = fcntl(dev_fd, F_GETFL);
    if (queue_fd < 0 || stop_fd < 0 || flags < 0 ||
        fcntl(dev_fd, F_SETFL, flags | O_NONBLOCK) < 0)
        goto fail;
    /* Signals stay with Python's thread: the readers are created with all blocked. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (int i = 0; i < want_threads; i++) {
        if (pthread_create(&threads[i], NULL, reader, NULL))
            break;
        nthreads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (nthreads)
        return;
fail:
    if (flags >= 0)
        fcntl(dev_fd, F_SETFL, flags);
    if (queue_fd >= 0)
        close(queue_fd);
    if (stop_fd >= 0)
        close(stop_fd);
    queue_fd = stop_fd = -1;
}

struct fuse_session *fuse_session_new(struct fuse_args *args, const struct fuse_lowlevel_ops *op,
                                      size_t op_size, void *userdata) {
    if (load_real() < 0) {
        errno = ENOSYS;
        return NULL;
    }
    if (want_threads < 0 || our_se || op_size != sizeof our_ops || !op->read)
        return real_new(args, op, op_size, userdata);
    memcpy(&our_ops, op, op_size);
    py_read = op->read;
    if (want_threads == 0)
        our_ops.read = fast_read;
    struct fuse_session *se = real_new(args, &our_ops, op_size, userdata);
    our_se = se;
    return se;
}

int fuse_session_fd(struct fuse_session *se) {
    if (load_real() < 0)
        return -1;
    if (se != our_se || want_threads <= 0)
        return real_fd(se);
    if (!started) {
        started = 1;
        start_threads(se);
    }
    return nthreads ? queue_fd : real_fd(se);
}

int fuse_session_receive_buf(struct fuse_session *se, struct fuse_buf *buf) {
    if (load_real() < 0)
        return -ENOSYS;
    if (se != our_se || !nthreads)
        return real_recv(se, buf);
    pthread_mutex_lock(&q_lock);
    if (!q_count) {
        int end = q_end;
        pthread_mutex_unlock(&q_lock);
        if (end == 1) {
            real_exit(se);
            return 0;
        }
        return end ? end : -EINTR; /* -EINTR: pyfuse3 waits again */
    }
    struct item it = queue[q_head];
    q_head = (q_head + 1) % QUEUE_MAX;
    q_count--;
    pthread_cond_signal(&q_room);
    pthread_mutex_unlock(&q_lock);
    uint64_t one;
    ssize_t ignored = read(queue_fd, &one, sizeof one);
    (void)ignored;
    free(buf->mem); /* ours (or libfuse's): both from malloc */
    buf->mem = it.mem;
    buf->size = it.len;
    buf->pos = 0;
    buf->flags = 0;
    return (int)it.len;
}

void fuse_session_destroy(struct fuse_session *se) {
    if (load_real() < 0)
        return;
    if (se == our_se) {
        atomic_store(&stopping, 1);
        if (stop_fd >= 0) {
            uint64_t one = 1;
            ssize_t ignored = write(stop_fd, &one, sizeof one);
            (void)ignored;
        }
        pthread_mutex_lock(&q_lock);
        pthread_cond_broadcast(&q_room);
        pthread_mutex_unlock(&q_lock);
        for (int i = 0; i < nthreads; i++)
            pthread_join(threads[i], NULL);
        nthreads = 0;
        while (q_count) {
            free(queue[q_head].mem);
            q_head = (q_head + 1) % QUEUE_MAX;
            q_count--;
        }
        if (queue_fd >= 0)
            close(queue_fd);
        if (stop_fd >= 0)
            close(stop_fd);
        queue_fd = stop_fd = dev_fd = -1;
        our_se = NULL;
        started = 0;
        forget_all();
    }
    real_destroy(se);
}

/* ---- the Python side ---------------------------------------------------------------- */

static PyObject *py_configure(PyObject *self, PyObject *args) {
    int threads;
    if (!PyArg_ParseTuple(args, "i", &threads))
        return NULL;
    if (threads < 0 || threads > THREADS_MAX) {
        PyErr_Format(PyExc_ValueError, "threads must be 0..%d", THREADS_MAX);
        return NULL;
    }
    if (load_real() < 0) {
        PyErr_SetString(PyExc_OSError, "libfuse3.so.3 could not be loaded");
        return NULL;
    }
    want_threads = threads;
    Py_RETURN_NONE;
}

static PyObject *py_state(PyObject *self, PyObject *noargs) {
    /* "off": pyfuse3's session is not ours (loaded too late, or not configured) */
    if (!our_se)
        return PyUnicode_FromString("off");
    return PyUnicode_FromString(nthreads ? "threads" : "inline");
}

static PyObject *py_set_block(PyObject *self, PyObject *args) {
    const char *name, *path;
    unsigned long long size, index;
    unsigned int block, crc, len;
    if (!PyArg_ParseTuple(args, "ssKIKII", &name, &path, &size, &block, &index, &crc, &len))
        return NULL;
    pthread_rwlock_wrlock(&lock);
    struct version *v = version_make(name, path, size, block);
    int bad = !v || slot_put(v, index, crc, len) < 0;
    pthread_rwlock_unlock(&lock);
    if (bad)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_clear_block(PyObject *self, PyObject *args) {
    const char *name;
    unsigned long long index;
    if (!PyArg_ParseTuple(args, "sK", &name, &index))
        return NULL;
    pthread_rwlock_wrlock(&lock);
    struct version *v = version_get(name);
    if (v)
        slot_del(v, index);
    pthread_rwlock_unlock(&lock);
    Py_RETURN_NONE;
}

static PyObject *py_referenced(PyObject *self, PyObject *args) {
    /* Whether block ``index`` was served here since the last ask (and clear it). */
    const char *name;
    unsigned long long index;
    if (!PyArg_ParseTuple(args, "sK", &name, &index))
        return NULL;
    int ref = 0;
    pthread_rwlock_rdlock(&lock);
    struct version *v = version_get(name);
    struct slot *s = v ? slot_find(v, index) : NULL;
    if (s)
        ref = atomic_exchange(&s->ref, 0);
    pthread_rwlock_unlock(&lock);
    return PyBool_FromLong(ref);
}

static PyObject *py_drop(PyObject *self, PyObject *args) {
    const char *name;
    if (!PyArg_ParseTuple(args, "s", &name))
        return NULL;
    pthread_rwlock_wrlock(&lock);
    struct version *v = version_get(name);
    if (v)
        version_drop(v);
    pthread_rwlock_unlock(&lock);
    Py_RETURN_NONE;
}

static PyObject *py_bind(PyObject *self, PyObject *args) {
    unsigned long long fh, size;
    const char *name, *path;
    unsigned int block;
    if (!PyArg_ParseTuple(args, "KssKI", &fh, &name, &path, &size, &block))
        return NULL;
    pthread_rwlock_wrlock(&lock);
    struct binding *b = bindings[fh % BBUCKETS];
    while (b && b->fh != fh)
        b = b->next;
    if (!b || strcmp(b->v->name, name) || b->v->dead) {
        unbind_locked(fh);
        struct version *v = version_make(name, path, size, block);
        b = v ? malloc(sizeof *b) : NULL;
        if (b) {
            b->fh = fh;
            b->v = v;
            v->bindings++;
            b->next = bindings[fh % BBUCKETS];
            bindings[fh % BBUCKETS] = b;
        }
    }
    pthread_rwlock_unlock(&lock);
    if (!b)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_unbind(PyObject *self, PyObject *args) {
    unsigned long long fh;
    if (!PyArg_ParseTuple(args, "K", &fh))
        return NULL;
    pthread_rwlock_wrlock(&lock);
    unbind_locked(fh);
    pthread_rwlock_unlock(&lock);
    Py_RETURN_NONE;
}

static PyObject *py_unbind_all(PyObject *self, PyObject *noargs) {
    pthread_rwlock_wrlock(&lock);
    unbind_all_locked();
    pthread_rwlock_unlock(&lock);
    Py_RETURN_NONE;
}

static PyObject *py_clear(PyObject *self, PyObject *noargs) {
    forget_all(); /* the session is not ours */
    Py_RETURN_NONE;
}

static PyObject *py_stats(PyObject *self, PyObject *noargs) {
    return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:i}", "hits", atomic_load(&st_hits), "misses",
                         atomic_load(&st_misses), "failed_check", atomic_load(&st_bad),
                         "handed_off", atomic_load(&st_handed), "replies_failed",
                         atomic_load(&st_replies_failed), "open_files",
                         atomic_load(&open_fds));
}

static PyObject *py_crc32c(PyObject *self, PyObject *args) {
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "y*", &view))
        return NULL;
    uint32_t c = crc32c(view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(c);
}

static PyMethodDef methods[] = {
    {"configure", py_configure, METH_VARARGS, "configure(threads): before pyfuse3.init"},
    {"state", py_state, METH_NOARGS, "'off', 'inline' or 'threads'"},
    {"set_block", py_set_block, METH_VARARGS,
     "set_block(name, path, size, block, index, crc, length)"},
    {"clear_block", py_clear_block, METH_VARARGS, "clear_block(name, index)"},
    {"referenced", py_referenced, METH_VARARGS, "referenced(name, index) -> bool (clears)"},
    {"drop", py_drop, METH_VARARGS, "drop(name)"},
    {"bind", py_bind, METH_VARARGS, "bind(fh, name, path, size, block)"},
    {"unbind", py_unbind, METH_VARARGS, "unbind(fh)"},
    {"unbind_all", py_unbind_all, METH_NOARGS, "unbind_all()"},
    {"clear", py_clear, METH_NOARGS, "clear(): no bindings, no blocks"},
    {"stats", py_stats, METH_NOARGS, "counters"},
    {"crc32c", py_crc32c, METH_VARARGS, "crc32c(bytes) -> int (the check this module runs)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_native", .m_size = -1, .m_methods = methods};

PyMODINIT_FUNC PyInit__native(void) {
    crc_init();
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2"))
        crc32c = crc_hw;
#endif
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    /* Python's updates must not wait behind a stream of reader-thread hits. */
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    return PyModule_Create(&module);
}
