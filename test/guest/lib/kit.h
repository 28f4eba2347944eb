/* The guest kit: include this, define guest_main(). See ../README.md. */
#ifndef KIT_H
#define KIT_H

#include <stdint.h>
#include <stddef.h>
#include "io.h"
#include "kstring.h"
#include "serial.h"
#include "print.h"
#include "exit.h"
#include "tap.h"
#include "multiboot.h"
#include "cmdline.h"
#include "fw_cfg.h"
#include "cmos.h"
#include "lapic.h"
#include "smp.h"
#include "pci.h"

/* Called after entry with serial initialised; returning v debug-exits with v
 * (tap_done() normally ends the guest first). */
int guest_main(void);

#endif
