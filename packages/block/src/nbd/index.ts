/** NBD: protocol codec, server (tsvmm nbd serve) and client (the nbd block driver). */
export * from './protocol.js';
export { SocketReader, SocketClosedError } from './socket-reader.js';
export { NbdServer, NbdConnection, serveNbd, type NbdExport, type NbdServeOptions } from './server.js';
export { NbdClient, NbdError, parseNbdUrl, type NbdExportInfo, type NbdTarget, type NbdUrl } from './client.js';
export { runNbd, type NbdIo, type NbdOutput } from './cli.js';
