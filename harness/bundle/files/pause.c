/*
 * The sandbox process of every pod: it holds the pod's namespaces open, reaps the
 * zombies that end up as its children, and exits 0 when asked to stop.
 *
 * Built static (`gcc -static`) so that its image needs no libc. PAUSE_VERSION is
 * the tag kubeadm expects for the sandbox image, set by the bundle build.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef PAUSE_VERSION
#define PAUSE_VERSION "unknown"
#endif

static void stop(int sig) {
  static const char msg[] = "pause: stopping on signal\n";
  (void)sig;
  /* Only async-signal-safe calls here: write(2) and _exit(2). */
  (void)write(STDERR_FILENO, msg, sizeof msg - 1);
  _exit(0);
}

static void reap(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

static int on(int sig, void (*handler)(int), int flags) {
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_handler = handler;
  action.sa_flags = flags;
  sigemptyset(&action.sa_mask);
  return sigaction(sig, &action, NULL);
}

int main(int argc, char **argv) {
  if (argc > 1 && (strcmp(argv[1], "-v") == 0 || strcmp(argv[1], "--version") == 0)) {
    printf("pause %s (MiniCluster)\n", PAUSE_VERSION);
    return 0;
  }
  if (getpid() != 1) {
    fprintf(stderr, "pause: warning: not PID 1, zombies elsewhere are not reaped\n");
  }
  if (on(SIGINT, stop, 0) < 0 || on(SIGTERM, stop, 0) < 0 ||
      on(SIGCHLD, reap, SA_NOCLDSTOP | SA_RESTART) < 0) {
    perror("pause: sigaction");
    return 1;
  }
  for (;;) {
    pause();
  }
}
