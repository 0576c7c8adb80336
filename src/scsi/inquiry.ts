// INQUIRY data (SPC-4 §6.6): standard data and the VPD pages 00h, 80h, 83h (SPC-4 §7.8) and B0h,
// B1h, B2h (SBC-4 §6.6). Pure builders over a description of the logical unit.
import { Designator, PERIPHERAL_QUALIFIER_NOT_SUPPORTED, PeripheralDeviceType, ProvisioningType, VersionDescriptor, VpdPage } from './constants.ts';
import { putU16, putU32, putU64 } from './cdb.ts';

/** Standard INQUIRY data is 96 bytes: up to the version descriptors and their reserved tail. */
export const STANDARD_INQUIRY_LENGTH = 96;

export interface Identity {
  /** T10 VENDOR IDENTIFICATION, at most 8 ASCII characters. */
  readonly vendor: string;
  /** PRODUCT IDENTIFICATION, at most 16. */
  readonly product: string;
  /** PRODUCT REVISION LEVEL, at most 4. */
  readonly revision: string;
  /** Unit serial number (VPD 80h), printable ASCII. */
  readonly serial: string;
  /** NAA designator of the logical unit (8 or 16 bytes), stable across restarts. */
  readonly deviceId: Uint8Array;
}

export interface TargetIdentity {
  /** SCSI target device name (iSCSI: the target's IQN). */
  readonly targetName: string;
  /** SCSI target port name (iSCSI: "<IQN>,t,0x<TPGT>"). */
  readonly targetPortName: string;
  readonly protocolIdentifier: number;
}

export interface BlockLimits {
  readonly maxCompareAndWriteBlocks: number;
  readonly optimalTransferGranularity: number;
  readonly maxTransferBlocks: number;
  readonly optimalTransferBlocks: number;
  /** 0 on a fully provisioned logical unit. */
  readonly maxUnmapBlocks: number;
  readonly maxUnmapDescriptors: number;
  readonly optimalUnmapGranularity: number;
  readonly maxWriteSameBlocks: number;
}

/** Space-padded ASCII of exactly `length` bytes (SPC-4 §4.4.1: printable characters only). */
function ascii(out: Uint8Array, offset: number, length: number, text: string): void {
  for (let i = 0; i < length; i++) {
    const c = i < text.length ? text.charCodeAt(i) : 0x20;
    out[offset + i] = c >= 0x20 && c <= 0x7e ? c : 0x20;
  }
}

/** Standard INQUIRY data for a direct-access block device, or for "no logical unit here". */
export function standardInquiry(id: Pick<Identity, 'vendor' | 'product' | 'revision'>, present: boolean): Uint8Array {
  const out = new Uint8Array(STANDARD_INQUIRY_LENGTH);
  out[0] = present ? PeripheralDeviceType.DIRECT_ACCESS_BLOCK : (PERIPHERAL_QUALIFIER_NOT_SUPPORTED << 5) | PeripheralDeviceType.UNKNOWN_OR_NO_DEVICE;
  out[1] = 0x00; // RMB 0: not removable
  out[2] = 0x06; // VERSION: SPC-4
  out[3] = 0x12; // HISUP 1, RESPONSE DATA FORMAT 2
  out[4] = STANDARD_INQUIRY_LENGTH - 5;
  out[5] = 0x00; // SCCS, ACC, TPGS 00b (no ALUA), 3PC, PROTECT all 0
  out[6] = 0x00;
  out[7] = 0x02; // CMDQUE
  ascii(out, 8, 8, id.vendor);
  ascii(out, 16, 16, id.product);
  ascii(out, 32, 4, id.revision);
  const versions = [VersionDescriptor.SAM_5, VersionDescriptor.ISCSI, VersionDescriptor.SPC_4, VersionDescriptor.SBC_3];
  versions.forEach((v, i) => putU16(out, 58 + 2 * i, v));
  return out;
}

/** VPD pages a direct-access logical unit offers, ascending. */
export const SUPPORTED_VPD_PAGES: readonly number[] = [
  VpdPage.SUPPORTED_VPD_PAGES,
  VpdPage.UNIT_SERIAL_NUMBER,
  VpdPage.DEVICE_IDENTIFICATION,
  VpdPage.BLOCK_LIMITS,
  VpdPage.BLOCK_DEVICE_CHARACTERISTICS,
  VpdPage.LOGICAL_BLOCK_PROVISIONING,
];

function vpd(pageCode: number, payloadLength: number): Uint8Array {
  const out = new Uint8Array(4 + payloadLength);
  out[1] = pageCode;
  putU16(out, 2, payloadLength);
  return out;
}

export function supportedVpdPages(): Uint8Array {
  const out = vpd(VpdPage.SUPPORTED_VPD_PAGES, SUPPORTED_VPD_PAGES.length);
  SUPPORTED_VPD_PAGES.forEach((p, i) => (out[4 + i] = p));
  return out;
}

export function unitSerialNumber(serial: string): Uint8Array {
  const out = vpd(VpdPage.UNIT_SERIAL_NUMBER, serial.length);
  ascii(out, 4, serial.length, serial);
  return out;
}

/** A designation descriptor (SPC-4 §7.8.6.1). PIV set (with the protocol) for port/device associations. */
function designator(codeSet: number, association: number, type: number, body: Uint8Array, protocol = -1): Uint8Array {
  const d = new Uint8Array(4 + body.byteLength);
  d[0] = ((protocol >= 0 ? protocol : 0) << 4) | codeSet;
  d[1] = (protocol >= 0 ? 0x80 : 0) | (association << 4) | type;
  d[3] = body.byteLength;
  d.set(body, 4);
  return d;
}

/** A SCSI name string designator body: UTF-8, NUL-terminated, padded to a multiple of 4 (SPC-4 §7.8.6.11). */
function nameString(name: string): Uint8Array {
  const bytes = new TextEncoder().encode(name.slice(0, 250));
  const out = new Uint8Array(Math.ceil((bytes.byteLength + 1) / 4) * 4);
  out.set(bytes);
  return out;
}

/** Device Identification VPD page: LU NAA and T10 vendor ID, target port and target device names. */
export function deviceIdentification(id: Identity, target: TargetIdentity, relativeTargetPort: number): Uint8Array {
  const t10 = new Uint8Array(8 + id.serial.length);
  ascii(t10, 0, 8, id.vendor);
  ascii(t10, 8, id.serial.length, id.serial);
  const port = new Uint8Array(4);
  putU16(port, 2, relativeTargetPort);
  const ds = [
    designator(Designator.CODE_SET_BINARY, Designator.ASSOCIATION_LOGICAL_UNIT, Designator.TYPE_NAA, id.deviceId),
    designator(Designator.CODE_SET_ASCII, Designator.ASSOCIATION_LOGICAL_UNIT, Designator.TYPE_T10_VENDOR_ID, t10),
    designator(Designator.CODE_SET_BINARY, Designator.ASSOCIATION_TARGET_PORT, Designator.TYPE_RELATIVE_TARGET_PORT, port, target.protocolIdentifier),
    designator(
      Designator.CODE_SET_UTF8,
      Designator.ASSOCIATION_TARGET_PORT,
      Designator.TYPE_SCSI_NAME_STRING,
      nameString(target.targetPortName),
      target.protocolIdentifier,
    ),
    designator(
      Designator.CODE_SET_UTF8,
      Designator.ASSOCIATION_TARGET_DEVICE,
      Designator.TYPE_SCSI_NAME_STRING,
      nameString(target.targetName),
      target.protocolIdentifier,
    ),
  ];
  let length = 0;
  for (const d of ds) length += d.byteLength;
  const out = vpd(VpdPage.DEVICE_IDENTIFICATION, length);
  let p = 4;
  for (const d of ds) {
    out.set(d, p);
    p += d.byteLength;
  }
  return out;
}

/** Block Limits VPD page (SBC-4 §6.6.4), page length 3Ch. */
export function blockLimits(l: BlockLimits): Uint8Array {
  const out = vpd(VpdPage.BLOCK_LIMITS, 0x3c);
  out[4] = 0x00; // WSNZ 0: WRITE SAME with NUMBER OF LOGICAL BLOCKS 0 writes to the end of the medium
  out[5] = l.maxCompareAndWriteBlocks;
  putU16(out, 6, l.optimalTransferGranularity);
  putU32(out, 8, l.maxTransferBlocks);
  putU32(out, 12, l.optimalTransferBlocks);
  putU32(out, 16, 0); // MAXIMUM PREFETCH LENGTH: not stated
  putU32(out, 20, l.maxUnmapBlocks);
  putU32(out, 24, l.maxUnmapDescriptors);
  putU32(out, 28, l.optimalUnmapGranularity);
  if (l.maxUnmapBlocks !== 0) putU32(out, 32, 0x80000000); // UGAVALID, UNMAP GRANULARITY ALIGNMENT 0
  putU64(out, 36, l.maxWriteSameBlocks);
  return out;
}

/** Block Device Characteristics VPD page (SBC-4 §6.6.2): a non-rotating medium. */
export function blockDeviceCharacteristics(): Uint8Array {
  const out = vpd(VpdPage.BLOCK_DEVICE_CHARACTERISTICS, 0x3c);
  putU16(out, 4, 0x0001); // MEDIUM ROTATION RATE: non-rotating
  return out;
}

/**
 * Logical Block Provisioning VPD page (SBC-4 §6.6.5). `zeroes`: deallocated blocks read as zeroes
 * (LBPRZ 001b), which the store promises with BlockDeviceInfo.discardZeroes.
 */
export function logicalBlockProvisioning(thin: boolean, zeroes = thin): Uint8Array {
  const out = vpd(VpdPage.LOGICAL_BLOCK_PROVISIONING, 4);
  if (thin) {
    // LBPU (UNMAP), LBPWS (WRITE SAME(16) with UNMAP), LBPWS10, and LBPRZ.
    out[5] = 0x80 | 0x40 | 0x20 | (zeroes ? 0x04 : 0);
    out[6] = ProvisioningType.THIN;
  } else {
    out[6] = ProvisioningType.FULL;
  }
  return out;
}
