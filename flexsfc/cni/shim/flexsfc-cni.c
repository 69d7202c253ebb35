/* flexsfc-cni node shim: passes one CNI call to the node agent over a unix socket.
 *
 * Statically linked, no allocations beyond fixed buffers, no configuration parser beyond finding one
 * string key. Protocol (all integers unsigned 32-bit big-endian; see docs/cni.md, "The node shim"):
 *   request:  "FXC1" n  n x (len "CNI_NAME=value")  len stdin
 *   reply:    "FXR1" exit_code len stdout
 * VERSION is answered here. Agent unreachable: DEL is queued on disk (exit 0), STATUS answers code 50,
 * every other verb code 11 ("try again later") naming the socket.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_SOCKET "/run/flexsfc/cni.sock"
#define DEFAULT_QUEUE "/var/lib/flexsfc/cni-del-queue"
#define DEFAULT_NODE_CONF "/etc/flexsfc/cni.conf"
#define MAX_STDIN (1u << 20)       /* network configuration incl. prevResult */
#define MAX_REQUEST (MAX_STDIN + (256u << 10))
#define MAX_REPLY (4u << 20)
#define MAX_ENV 64
#define MAX_ENV_ENTRY (64u << 10)
#define MAX_NODE_CONF (64u << 10)
#define IO_TIMEOUT_S 30    /* connect and send */
#define REPLY_TIMEOUT_S 120 /* the agent may wait for its state lock (lockTimeoutSeconds) */
#define SUPPORTED "[\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\"]"

extern char **environ;

static char stdin_buf[MAX_STDIN + 1];
static unsigned char request[MAX_REQUEST];
static unsigned char reply[MAX_REPLY];
static char node_conf[MAX_NODE_CONF + 1];
static char version[33] = "1.1.0";

/* JSON string body: quotes, backslashes and control characters escaped. */
static void json_puts(const char *s) {
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
}

static int fail(int code, const char *msg, const char *details) {
    printf("{\"cniVersion\":\"%s\",\"code\":%d,\"msg\":\"", version, code);
    json_puts(msg);
    printf("\",\"details\":\"");
    json_puts(details);
    printf("\"}\n");
    fflush(stdout);
    return 1;
}

/* The value of the first "key": "value" in a JSON text: a plain string without escapes, at most
 * cap-1 bytes. 1 found, 0 absent, -1 present but not such a string. */
static int find_string_key(const char *text, const char *key, char *out, size_t cap) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\"", key);
    const char *p = strstr(text, pattern);
    if (!p) return 0;
    p += strlen(pattern);
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    if (*p++ != ':') return -1;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    if (*p++ != '"') return -1;
    size_t n = 0;
    for (; *p && *p != '"'; p++) {
        if (*p == '\\' || (unsigned char)*p < 0x20 || n + 1 >= cap) return -1;
        out[n++] = *p;
    }
    if (*p != '"') return -1;
    out[n] = '\0';
    return 1;
}

/* Failure with errno set: returns -1. */
static int fail_errno(int err) {
    errno = err;
    return -1;
}

/* Failure of a step of the call: *why names it, errno says why (kept, or set when err != 0). */
static int fail_step(const char **why, const char *step, int err) {
    *why = step;
    if (err) errno = err;
    return -1;
}

static ssize_t read_all(int fd, void *buf, size_t cap) {
    size_t got = 0;
    while (got < cap) {
        ssize_t n = read(fd, (char *)buf + got, cap - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -1;
        if (n == 0) break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

static int write_all(int fd, const void *buf, size_t len) {
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, (const char *)buf + done, len - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        done += (size_t)n;
    }
    return 0;
}

static void put_u32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8); p[3] = (unsigned char)v;
}

static uint32_t get_u32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

/* The request frame: the CNI_* variables only, then stdin. Length of the frame, 0 if too large. */
static size_t build_request(size_t stdin_len) {
    size_t pos = 8, count = 0;
    memcpy(request, "FXC1", 4);
    for (char **e = environ; *e; e++) {
        if (strncmp(*e, "CNI_", 4) != 0) continue;
        size_t len = strlen(*e), room = MAX_REQUEST - pos - stdin_len; /* always >= 4 */
        if (++count > MAX_ENV || len > MAX_ENV_ENTRY || len + 8 > room) return 0; /* 8: see room */
        put_u32(request + pos, (uint32_t)len);
        memcpy(request + pos + 4, *e, len);
        pos += 4 + len;
    }
    put_u32(request + 4, (uint32_t)count);
    put_u32(request + pos, (uint32_t)stdin_len);
    memcpy(request + pos + 4, stdin_buf, stdin_len);
    return pos + 4 + stdin_len;
}

/* A node-level path: the variable `env`, else the string `key` of the node file, else `fallback`. */
static int node_setting(const char *env_name, const char *key, const char *fallback, char *out, size_t cap,
                        char *why, size_t why_cap) {
    const char *env = getenv(env_name);
    if (env && *env) {
        if (strlen(env) >= cap) {
            snprintf(why, why_cap, "%s is too long", env_name);
            return -1;
        }
        strcpy(out, env);
        return 0;
    }
    const char *named = getenv("FLEXSFC_CNI_CONF");
    int explicit_conf = named && *named; /* a named file must exist, as for the Python plugin */
    const char *conf = explicit_conf ? named : DEFAULT_NODE_CONF;
    snprintf(out, cap, "%s", fallback);
    int fd = open(conf, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT && !explicit_conf) return 0; /* no node file: the default */
        snprintf(why, why_cap, "node file %s: %s", conf, strerror(errno));
        return -1;
    }
    ssize_t n = read_all(fd, node_conf, MAX_NODE_CONF);
    close(fd);
    if (n < 0 || n == MAX_NODE_CONF) {
        snprintf(why, why_cap, "node file %s cannot be read or is too large", conf);
        return -1;
    }
    node_conf[n] = '\0';
    if (find_string_key(node_conf, key, out, cap) < 0) {
        snprintf(why, why_cap, "node file %s: \"%s\" must be a plain string path", conf, key);
        return -1;
    }
    return 0;
}

/* Where the agent listens: $FLEXSFC_CNI_SOCKET, else "socket" in the node file, else the default. */
static int socket_path(char *out, size_t cap, char *why, size_t why_cap) {
    return node_setting("FLEXSFC_CNI_SOCKET", "socket", DEFAULT_SOCKET, out, cap, why, why_cap);
}

static int connect_agent(const char *path) {
    struct sockaddr_un addr;
    struct timeval tv = {IO_TIMEOUT_S, 0};
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof addr.sun_path) return fail_errno(ENAMETOOLONG);
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        int saved = errno;
        close(fd);
        return fail_errno(saved);
    }
    tv.tv_sec = REPLY_TIMEOUT_S;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

/* 0, with exit_code and out_len set, when the agent answered; -1 with errno or a reason otherwise. */
static int call_agent(int fd, size_t req_len, int *exit_code, size_t *out_len, const char **why) {
    *why = NULL;
    if (write_all(fd, request, req_len) < 0) return fail_step(why, "sending the request", 0);
    shutdown(fd, SHUT_WR);
    ssize_t n = read_all(fd, reply, 12);
    if (n < 0) return fail_step(why, "waiting for the reply", 0);
    if (n != 12 || memcmp(reply, "FXR1", 4) != 0) return fail_step(why, "no reply", EPROTO);
    uint32_t code = get_u32(reply + 4), len = get_u32(reply + 8);
    if (code > 255 || len > MAX_REPLY) return fail_step(why, "malformed reply", EPROTO);
    n = read_all(fd, reply, len);
    if (n < 0) return fail_step(why, "reading the reply", 0);
    if (n != (ssize_t)len) return fail_step(why, "truncated reply", EPROTO);
    *exit_code = (int)code;
    *out_len = len;
    return 0;
}

static int mkdir_p(const char *path) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp) return fail_errno(ENAMETOOLONG);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0700) < 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    return mkdir(tmp, 0700) < 0 && errno != EEXIST ? -1 : 0;
}

/* The DEL request as a file in the queue directory: temporary name, fsync, rename, fsync the dir. */
static int queue_delete(size_t req_len, char *where, size_t cap) {
    char dir[1024], why[256];
    if (node_setting("FLEXSFC_CNI_DELETE_QUEUE", "deleteQueue", DEFAULT_QUEUE, dir, sizeof dir, why,
                     sizeof why) < 0)
        return fail_errno(EINVAL);
    struct timespec now;
    char tmp[4200];
    clock_gettime(CLOCK_REALTIME, &now);
    snprintf(where, cap, "%s", dir);
    if (mkdir_p(dir) < 0) return -1;
    int len = snprintf(tmp, sizeof tmp, "%s/.tmp-%lld.%09ld-%d", dir, (long long)now.tv_sec,
                       now.tv_nsec, (int)getpid());
    if (len < 0 || len >= (int)sizeof tmp || snprintf(where, cap, "%s/del-%lld.%09ld-%d", dir,
        (long long)now.tv_sec, now.tv_nsec, (int)getpid()) >= (int)cap) return fail_errno(ENAMETOOLONG);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return -1;
    if (write_all(fd, request, req_len) < 0 || fsync(fd) < 0 || close(fd) < 0 || rename(tmp, where) < 0) {
        int saved = errno;
        unlink(tmp);
        return fail_errno(saved);
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

int main(void) {
    const char *command = getenv("CNI_COMMAND");
    char path[108], why[512], detail[1024], queued[4200], more[5600];
    signal(SIGPIPE, SIG_IGN); /* a vanished agent is an error to report, not a reason to die */
    ssize_t stdin_len = read_all(0, stdin_buf, MAX_STDIN + 1);
    if (stdin_len < 0) stdin_len = 0;
    stdin_buf[stdin_len > (ssize_t)MAX_STDIN ? MAX_STDIN : stdin_len] = '\0';
    char wanted[sizeof version];
    if (find_string_key(stdin_buf, "cniVersion", wanted, sizeof wanted) == 1 && wanted[0] &&
        strspn(wanted, "0123456789.") == strlen(wanted))
        strcpy(version, wanted);
    if (command && strcmp(command, "VERSION") == 0) {
        printf("{\"cniVersion\":\"%s\",\"supportedVersions\":" SUPPORTED "}\n", version);
        return 0;
    }
    if (stdin_len > (ssize_t)MAX_STDIN) return fail(5, "network configuration on stdin too large", "over 1 MiB");
    size_t req_len = build_request((size_t)stdin_len);
    if (req_len == 0) return fail(4, "CNI_* environment too large", "at most 64 variables of 64 KiB");
    if (socket_path(path, sizeof path, why, sizeof why) < 0)
        return fail(7, "invalid node configuration of flexsfc-cni", why);
    int is_del = command && strcmp(command, "DEL") == 0;
    int exit_code = 1;
    size_t out_len = 0;
    const char *stage = "connecting";
    int fd = connect_agent(path);
    int rc = fd < 0 ? -1 : call_agent(fd, req_len, &exit_code, &out_len, &stage);
    int saved = errno;
    if (fd >= 0) close(fd);
    if (rc == 0) {
        if (write_all(1, reply, out_len) < 0) return 1;
        return exit_code;
    }
    snprintf(detail, sizeof detail, "%s: %s", stage ? stage : "connecting", strerror(saved));
    if (is_del) {
        if (queue_delete(req_len, queued, sizeof queued) == 0) {
            fprintf(stderr, "flexsfc-cni: agent at %s unreachable (%s); DEL queued as %s\n", path, detail,
                    queued);
            return 0;
        }
        snprintf(more, sizeof more, "%s; queueing the DEL in %s failed: %s", detail, queued, strerror(errno));
        snprintf(why, sizeof why, "flexsfc node agent not reachable at %s", path);
        return fail(11, why, more);
    }
    snprintf(why, sizeof why, "flexsfc node agent not reachable at %s", path);
    if (command && strcmp(command, "STATUS") == 0)
        return fail(50, why, detail);
    return fail(11, why, detail);
}
