// Checks for the chart, plot and reproduce tests: a small PNG decoder and an XML
// well-formedness check, written independently of the code that produces the files.
import { crc32, inflateSync } from 'node:zlib';

export interface DecodedPng {
  readonly width: number;
  readonly height: number;
  /** RGBA, 4 bytes per pixel, rows top to bottom. */
  readonly rgba: Uint8Array;
}

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a] as const;

/**
 * Decodes an 8-bit non-interlaced RGBA or RGB PNG (what resvg writes), checking the signature,
 * every chunk's CRC, IHDR first and IEND last (PNG spec, ISO/IEC 15948, sections 5 and 11).
 */
export function decodePng(png: Uint8Array): DecodedPng {
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  PNG_SIGNATURE.forEach((b, i) => {
    if (png[i] !== b) throw new Error(`PNG: bad signature byte ${i}`);
  });
  let pos = 8;
  let width = 0;
  let height = 0;
  let channels = 0;
  const idat: Uint8Array[] = [];
  let sawEnd = false;
  let first = true;
  while (pos < png.length) {
    // Chunk: u32 BE length, 4-byte type, data, u32 BE CRC over type + data.
    if (pos + 12 > png.length) throw new Error(`PNG: truncated chunk header at ${pos}`);
    const length = view.getUint32(pos, false);
    const type = String.fromCharCode(...png.subarray(pos + 4, pos + 8));
    if (pos + 12 + length > png.length) throw new Error(`PNG: chunk ${type} runs past the end`);
    const data = png.subarray(pos + 8, pos + 8 + length);
    const crc = view.getUint32(pos + 8 + length, false);
    if (crc32(png.subarray(pos + 4, pos + 8 + length)) !== crc) throw new Error(`PNG: bad CRC in ${type}`);
    if (first && type !== 'IHDR') throw new Error('PNG: first chunk is not IHDR');
    first = false;
    if (type === 'IHDR') {
      // IHDR: u32 width, u32 height, bit depth, colour type, compression, filter, interlace.
      width = view.getUint32(pos + 8, false);
      height = view.getUint32(pos + 12, false);
      const depth = data[8];
      const colour = data[9];
      if (depth !== 8 || (colour !== 6 && colour !== 2) || data[12] !== 0) {
        throw new Error(`PNG: unsupported depth ${depth} / colour type ${colour} / interlace ${data[12]}`);
      }
      channels = colour === 6 ? 4 : 3;
    } else if (type === 'IDAT') {
      idat.push(data);
    } else if (type === 'IEND') {
      sawEnd = true;
      pos += 12 + length;
      break;
    }
    pos += 12 + length;
  }
  if (!sawEnd) throw new Error('PNG: no IEND');
  if (pos !== png.length) throw new Error('PNG: bytes after IEND');
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  if (raw.length !== height * (stride + 1)) throw new Error(`PNG: ${raw.length} bytes of image data, want ${height * (stride + 1)}`);
  const out = new Uint8Array(width * height * 4);
  let prev = new Uint8Array(stride);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    const line = new Uint8Array(raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1)));
    for (let i = 0; i < stride; i++) {
      const a = i >= channels ? (line[i - channels] as number) : 0;
      const b = prev[i] as number;
      const c = i >= channels ? (prev[i - channels] as number) : 0;
      let predictor: number;
      switch (filter) {
        case 0:
          predictor = 0;
          break;
        case 1:
          predictor = a;
          break;
        case 2:
          predictor = b;
          break;
        case 3:
          predictor = (a + b) >> 1;
          break;
        case 4: {
          const p = a + b - c;
          const pa = Math.abs(p - a);
          const pb = Math.abs(p - b);
          const pc = Math.abs(p - c);
          predictor = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
          break;
        }
        default:
          throw new Error(`PNG: bad filter type ${filter} on row ${y}`);
      }
      line[i] = ((line[i] as number) + predictor) & 0xff;
    }
    for (let x = 0; x < width; x++) {
      for (let ch = 0; ch < 4; ch++) out[(y * width + x) * 4 + ch] = ch < channels ? (line[x * channels + ch] as number) : 255;
    }
    prev = line;
  }
  return { width, height, rgba: out };
}

/** Number of distinct RGBA values in a region (default: the whole image). */
export function distinctColours(img: DecodedPng, region = { x: 0, y: 0, width: img.width, height: img.height }): number {
  const seen = new Set<number>();
  for (let y = region.y; y < region.y + region.height; y++) {
    for (let x = region.x; x < region.x + region.width; x++) {
      const i = (y * img.width + x) * 4;
      seen.add(
        (((img.rgba[i] as number) << 24) | ((img.rgba[i + 1] as number) << 16) | ((img.rgba[i + 2] as number) << 8) | (img.rgba[i + 3] as number)) >>> 0,
      );
    }
  }
  return seen.size;
}

/** Pixels in a region darker than `threshold` on every channel (text, axes). */
export function darkPixels(img: DecodedPng, region: { x: number; y: number; width: number; height: number }, threshold = 100): number {
  let n = 0;
  for (let y = region.y; y < region.y + region.height; y++) {
    for (let x = region.x; x < region.x + region.width; x++) {
      const i = (y * img.width + x) * 4;
      if ((img.rgba[i] as number) < threshold && (img.rgba[i + 1] as number) < threshold && (img.rgba[i + 2] as number) < threshold) n++;
    }
  }
  return n;
}

export interface XmlElement {
  readonly name: string;
  readonly attrs: Readonly<Record<string, string>>;
  /** Text directly inside, entities decoded. */
  text: string;
  readonly children: XmlElement[];
}

const ENTITY = /&(?:(amp|lt|gt|quot|apos)|#(\d+)|#x([0-9a-fA-F]+));/g;
const NAMED: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

function decodeText(text: string, where: string): string {
  const stripped = text.replace(ENTITY, '');
  if (stripped.includes('&')) throw new Error(`XML: bare or unknown entity in ${where}`);
  if (stripped.includes('<')) throw new Error(`XML: '<' in ${where}`);
  return text.replace(ENTITY, (_m, named?: string, dec?: string, hex?: string) =>
    named !== undefined ? (NAMED[named] as string) : String.fromCodePoint(Number.parseInt(dec ?? hex ?? '0', dec !== undefined ? 10 : 16)),
  );
}

/**
 * Parses a document into elements, throwing on what an XML parser rejects: unclosed or crossed
 * tags, unquoted or repeated attributes, bare '&' or '<', more than one root element.
 */
export function parseXml(text: string): XmlElement {
  let pos = 0;
  const stack: XmlElement[] = [];
  let root: XmlElement | undefined;
  const NAME = /[A-Za-z_:][\w:.-]*/y;
  const ATTR = /\s+([A-Za-z_:][\w:.-]*)\s*=\s*(?:"([^"]*)"|'([^']*)')/y;
  while (pos < text.length) {
    const lt = text.indexOf('<', pos);
    const chunk = text.slice(pos, lt < 0 ? text.length : lt);
    const top = stack[stack.length - 1];
    if (top !== undefined) top.text += decodeText(chunk, `<${top.name}>`);
    else if (chunk.trim() !== '') throw new Error(`XML: text outside the root element at ${pos}`);
    if (lt < 0) break;
    pos = lt;
    if (text.startsWith('<?', pos)) {
      const end = text.indexOf('?>', pos);
      if (end < 0) throw new Error('XML: unterminated processing instruction');
      pos = end + 2;
    } else if (text.startsWith('<!--', pos)) {
      const end = text.indexOf('-->', pos);
      if (end < 0) throw new Error('XML: unterminated comment');
      pos = end + 3;
    } else if (text.startsWith('</', pos)) {
      NAME.lastIndex = pos + 2;
      const m = NAME.exec(text);
      const close = text.indexOf('>', pos);
      const open = stack.pop();
      if (m === null || open === undefined || open.name !== m[0] || text.slice(NAME.lastIndex, close).trim() !== '') {
        throw new Error(`XML: mismatched closing tag at ${pos}`);
      }
      pos = close + 1;
    } else {
      NAME.lastIndex = pos + 1;
      const m = NAME.exec(text);
      if (m === null) throw new Error(`XML: bad tag at ${pos}`);
      const attrs: Record<string, string> = {};
      let at = NAME.lastIndex;
      for (;;) {
        ATTR.lastIndex = at;
        const a = ATTR.exec(text);
        if (a === null) break;
        const key = a[1] as string;
        if (key in attrs) throw new Error(`XML: attribute ${key} repeated at ${at}`);
        attrs[key] = decodeText(a[2] ?? a[3] ?? '', `attribute ${key}`);
        at = ATTR.lastIndex;
      }
      const rest = /\s*(\/?)>/y;
      rest.lastIndex = at;
      const end = rest.exec(text);
      if (end === null) throw new Error(`XML: malformed tag <${m[0]}> at ${pos}`);
      const element: XmlElement = { name: m[0], attrs, text: '', children: [] };
      const parent = stack[stack.length - 1];
      if (parent !== undefined) parent.children.push(element);
      else if (root === undefined) root = element;
      else throw new Error('XML: more than one root element');
      if (end[1] !== '/') stack.push(element);
      pos = rest.lastIndex;
    }
  }
  if (stack.length > 0) throw new Error(`XML: <${(stack[stack.length - 1] as XmlElement).name}> not closed`);
  if (root === undefined) throw new Error('XML: no root element');
  return root;
}

/** Every element in document order. */
export function xmlElements(root: XmlElement): XmlElement[] {
  const out: XmlElement[] = [root];
  for (const child of root.children) out.push(...xmlElements(child));
  return out;
}
