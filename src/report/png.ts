// SVG to PNG with resvg (@resvg/resvg-js: a prebuilt native renderer, no system libraries). Loaded on
// first use so that the rest of the report code works, and says why, where the binary is missing.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { BlockError, Errno } from '../internal/errors.ts';

interface ResvgFont {
  loadSystemFonts: boolean;
  fontFiles?: string[];
  defaultFontFamily?: string;
  sansSerifFamily?: string;
}
interface ResvgModule {
  Resvg: new (
    svg: string,
    options: { font: ResvgFont; background?: string; logLevel?: string },
  ) => {
    render(): { asPng(): Uint8Array; readonly width: number; readonly height: number };
  };
}

// The families the charts name (CHART_FONT_FAMILY), where Debian and Fedora put them. Loading one
// file is much faster than resvg scanning every system font on each call.
const KNOWN_FONTS: readonly { family: string; dirs: readonly string[]; regular: string; bold: string }[] = [
  {
    family: 'DejaVu Sans',
    dirs: ['/usr/share/fonts/truetype/dejavu', '/usr/share/fonts/dejavu', '/usr/share/fonts/dejavu-sans-fonts'],
    regular: 'DejaVuSans.ttf',
    bold: 'DejaVuSans-Bold.ttf',
  },
  {
    family: 'Liberation Sans',
    dirs: ['/usr/share/fonts/truetype/liberation', '/usr/share/fonts/liberation-sans'],
    regular: 'LiberationSans-Regular.ttf',
    bold: 'LiberationSans-Bold.ttf',
  },
];

let resvg: ResvgModule | undefined;
let font: ResvgFont | undefined;

function loadResvg(): ResvgModule {
  if (resvg === undefined) {
    try {
      resvg = createRequire(import.meta.url)('@resvg/resvg-js') as ResvgModule;
    } catch (cause) {
      throw new BlockError('BLK_ERR_NO_RENDERER', 'svgToPng: cannot load @resvg/resvg-js (npm install @resvg/resvg-js@2.6.2)', {
        errno: Errno.EOPNOTSUPP,
        cause,
      });
    }
  }
  return resvg;
}

/** Which fonts resvg gets: a known sans font file if there is one, else every system font. */
export function chartFonts(): ResvgFont {
  if (font === undefined) {
    font = { loadSystemFonts: true };
    for (const known of KNOWN_FONTS) {
      const dir = known.dirs.find((d) => existsSync(join(d, known.regular)));
      if (dir === undefined) continue;
      const fontFiles = [join(dir, known.regular)];
      if (existsSync(join(dir, known.bold))) fontFiles.push(join(dir, known.bold));
      font = { loadSystemFonts: false, fontFiles, defaultFontFamily: known.family, sansSerifFamily: known.family };
      break;
    }
  }
  return font;
}

export function svgToPng(svg: string): Uint8Array {
  const { Resvg } = loadResvg();
  const image = new Resvg(svg, { font: chartFonts(), background: '#ffffff', logLevel: 'off' }).render();
  return new Uint8Array(image.asPng());
}
