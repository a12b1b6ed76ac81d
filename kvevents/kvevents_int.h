/* kvevents_int.h: test hooks of the KV-event publisher. Only kvevents.c and
 * the kvevents tests include this; other modules use kvevents.h. */
#ifndef MFS_KVEVENTS_INT_H
#define MFS_KVEVENTS_INT_H

#include "kvevents.h"

/* Tests only: while paused the publisher thread sends nothing, so the
 * queue fills (drop counting) and a subscriber can connect before the first
 * batch. kve_publisher_free sends everything regardless. */
void kve_publisher_pause(kve_publisher *p, int paused);
/* kve_publisher_new with the publisher thread paused from its start. */
int kve_publisher_new_paused(kve_publisher **out, const kve_opts *o, char *err, size_t errlen);

#endif
