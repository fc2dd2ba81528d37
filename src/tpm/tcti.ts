/** The TCTI configuration string tpm2-tss opens for the signer's `path` option. */
import { TpmError } from "./error.ts";

/** "/dev/tpmrm0" → "device:/dev/tpmrm0"; "host:port" → the swtpm TCTI; a full TCTI config string as given. */
export function tctiConfig(path: string): string {
  if (path.startsWith("/")) return `device:${path}`;
  if (/^(device|swtpm|mssim|tabrmd|cmd|libtpms|spi-helper|pcap):/.test(path) && /[=/]|:$/.test(path)) return path;
  const m = /^(\[[^\]]+\]|[^:/\s]+):(\d{1,5})$/.exec(path);
  if (m) return `swtpm:host=${m[1]!.replace(/^\[|\]$/g, "")},port=${m[2]}`;
  throw new TpmError(
    "TPM_UNAVAILABLE",
    `TPM path "${path}" is neither a device (/dev/tpmrm0) nor host:port of a swtpm nor a TCTI config string`,
  );
}
