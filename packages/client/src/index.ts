/**
 * @tsvmm/client: a typed client for the tsvmm control protocol.
 *
 *   const client = await TsvmmClient.connect('unix:/run/tsvmm.sock');
 *   const { vmId } = await client.vmCreate({ description: { kernel: 'guest.elf' } });
 *   client.onConsoleOutput((o) => process.stdout.write(Buffer.from(o.data, 'base64')));
 *   await client.vmStart({ vmId });
 *
 * Connects over a unix socket, TCP, or spawns `tsvmm serve --stdio`; does the
 * LSP lifecycle (`initialize`/`initialized`, `shutdown`/`exit`) itself.
 */
export * from './client.js';
