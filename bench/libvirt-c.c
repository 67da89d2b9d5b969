/*
 * The floor under bench/binding.ts's qemu:///system tier: the same calls made straight through
 * libvirt's C client, threads sharing one connection as the binding's workers and
 * libvirt-python's threads do. Neither binding can be cheaper than this per call; a round in
 * which it, too, is slow was a slow round for the host, not for a binding.
 * Built and run by bench/binding.ts:
 *   libvirt-c URI UUID CASE THREADS CALLS
 * CASE is lookup, lookup-info or xml (as bench/libvirt-python.py). Prints one JSON object:
 * {"calls": N, "seconds": S, "cpuSeconds": C}, C being this process's user + system CPU time
 * while the calls ran.
 */
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

enum Case { LOOKUP, LOOKUP_INFO, XML };

static virConnectPtr conn;
static virDomainPtr target;
static const char* uuid;
static enum Case which;
static int perThread;
static pthread_barrier_t start;

static void Fail(const char* what) {
  const virError* err = virGetLastError();
  fprintf(stderr, "%s failed: %s\n", what, err && err->message ? err->message : "unknown error");
  exit(1);
}

static void One(void) {
  if (which == XML) {
    char* xml = virDomainGetXMLDesc(target, 0);
    if (xml == NULL) Fail("virDomainGetXMLDesc");
    free(xml);
    return;
  }
  virDomainPtr dom = virDomainLookupByUUIDString(conn, uuid);
  if (dom == NULL) Fail("virDomainLookupByUUIDString");
  if (which == LOOKUP_INFO) {
    virDomainInfo info;
    if (virDomainGetInfo(dom, &info) < 0) Fail("virDomainGetInfo");
  }
  virDomainFree(dom);
}

static void* Worker(void* arg) {
  (void)arg;
  pthread_barrier_wait(&start);
  for (int i = 0; i < perThread; i++) One();
  return NULL;
}

static double Seconds(struct timeval tv) { return tv.tv_sec + tv.tv_usec / 1e6; }

static void Quiet(void* data, virErrorPtr err) {
  (void)data;
  (void)err;
}

int main(int argc, char** argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: %s URI UUID lookup|lookup-info|xml THREADS CALLS\n", argv[0]);
    return 2;
  }
  uuid = argv[2];
  if (strcmp(argv[3], "lookup") == 0) {
    which = LOOKUP;
  } else if (strcmp(argv[3], "lookup-info") == 0) {
    which = LOOKUP_INFO;
  } else if (strcmp(argv[3], "xml") == 0) {
    which = XML;
  } else {
    fprintf(stderr, "unknown case %s\n", argv[3]);
    return 2;
  }
  int threads = atoi(argv[4]);
  int calls = atoi(argv[5]);
  if (threads < 1 || threads > 256 || calls < threads) {
    fprintf(stderr, "THREADS must be 1-256 and CALLS at least THREADS\n");
    return 2;
  }
  virSetErrorFunc(NULL, Quiet);
  conn = virConnectOpen(argv[1]);
  if (conn == NULL) Fail("virConnectOpen");
  target = virDomainLookupByUUIDString(conn, uuid);
  if (target == NULL) Fail("virDomainLookupByUUIDString");
  /* Warm-up, as the other sides do: the connection's buffers, the daemon's threads. */
  int warm = calls / 10 < 2000 ? calls / 10 : 2000;
  for (int i = 0; i < warm; i++) One();

  perThread = calls / threads;
  pthread_t* pool = calloc(threads, sizeof *pool);
  pthread_barrier_init(&start, NULL, threads + 1);
  for (int i = 0; i < threads; i++) pthread_create(&pool[i], NULL, Worker, NULL);
  struct rusage r0, r1;
  struct timespec t0, t1;
  getrusage(RUSAGE_SELF, &r0);
  pthread_barrier_wait(&start);
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < threads; i++) pthread_join(pool[i], NULL);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  getrusage(RUSAGE_SELF, &r1);
  double seconds = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
  double cpu = Seconds(r1.ru_utime) - Seconds(r0.ru_utime) + Seconds(r1.ru_stime) -
               Seconds(r0.ru_stime);
  printf("{\"calls\": %d, \"seconds\": %.6f, \"cpuSeconds\": %.6f}\n", perThread * threads,
         seconds, cpu);
  free(pool);
  virDomainFree(target);
  virConnectClose(conn);
  return 0;
}
