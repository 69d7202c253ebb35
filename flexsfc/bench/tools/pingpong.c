/* UDP ping-pong for the `switched` benchmark: every round trip is recorded with its send time on
 * CLOCK_MONOTONIC, the clock the benchmark cuts its slots with, so each sample falls into the slot
 * of the path it crossed. (sockperf's full log stamps samples with its own time base.)
 *
 *   pingpong server PORT                        echo every datagram back to its sender
 *   pingpong client IP PORT SIZE SECONDS FILE   records: u64 send time (ns), u32 round trip (ns)
 *
 * The client stops at SECONDS or on SIGINT/SIGTERM, flushes FILE and prints "sent lost".
 */
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct __attribute__((packed)) sample {
	uint64_t sent_ns;
	uint32_t rtt_ns;
};

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int fail(const char *what)
{
	perror(what);
	return 1;
}

static int serve(int port)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
	if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		return fail("server socket");
	char buf[65536];
	for (;;) {
		struct sockaddr_in peer;
		socklen_t len = sizeof(peer);
		ssize_t n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&peer, &len);
		if (n >= 0)
			sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&peer, len);
	}
}

static int ping(const char *ip, int port, size_t size, double seconds, const char *path)
{
	struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: a blocked recv returns */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
	struct timeval timeout = {.tv_sec = 0, .tv_usec = 20000}; /* a lost datagram costs 20 ms */
	if (fd < 0 || inet_pton(AF_INET, ip, &addr.sin_addr) != 1 ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout)) < 0 ||
	    connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		return fail("client socket");
	FILE *out = fopen(path, "wb");
	if (!out)
		return fail(path);
	char buf[65536] = {0};
	if (size > sizeof(buf))
		size = sizeof(buf);
	uint64_t deadline = now_ns() + (uint64_t)(seconds * 1e9), sent = 0, lost = 0;
	while (!stopping) {
		uint64_t start = now_ns();
		if (start >= deadline)
			break;
		if (send(fd, buf, size, 0) < 0) {
			if (errno == EINTR)
				continue;
			return fail("send");
		}
		sent++;
		if (recv(fd, buf, sizeof(buf), 0) < 0) {
			lost++; /* timed out, or interrupted by the stop signal */
			continue;
		}
		struct sample s = {.sent_ns = start, .rtt_ns = (uint32_t)(now_ns() - start)};
		if (fwrite(&s, sizeof(s), 1, out) != 1)
			return fail("write");
	}
	if (fclose(out) != 0)
		return fail("close");
	printf("%llu %llu\n", (unsigned long long)sent, (unsigned long long)lost);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "server") == 0)
		return serve(atoi(argv[2]));
	if (argc == 7 && strcmp(argv[1], "client") == 0)
		return ping(argv[2], atoi(argv[3]), (size_t)atoi(argv[4]), atof(argv[5]), argv[6]);
	fprintf(stderr, "usage: pingpong server PORT | pingpong client IP PORT SIZE SECONDS FILE\n");
	return 2;
}
