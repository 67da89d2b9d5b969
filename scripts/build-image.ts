// npm run image: the agent image from the Dockerfile's runtime stage, built offline (no
// registry, no container engine) into build/image/<name>.tar in OCI layout.
//   npm run image [-- --tag NAME:TAG] [--out FILE]
import { parseArgs } from 'node:util';
import { join } from 'node:path';
import {
  buildAgentImage,
  writeImage,
  AGENT_IMAGE_REFERENCE,
} from '../src/commands/local/agent-image.js';
import { packageRoot } from '../src/commands/local/package-root.js';

const { values } = parseArgs({
  options: { tag: { type: 'string' }, out: { type: 'string' } },
  strict: true,
});
const root = packageRoot();
const tag = values.tag ?? AGENT_IMAGE_REFERENCE;
const out = values.out ?? join(root, 'build', 'image', `${tag.replace(/[/:@]/g, '-')}.tar`);
const started = Date.now();
try {
  const image = buildAgentImage({ root, reference: tag, log: (l) => console.log(l) });
  writeImage(image, out);
  const mib = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MiB`;
  console.log(
    `image: ${image.reference} ${image.manifestDigest}\n` +
      `image: size ${mib(image.size.uncompressed)} unpacked, ${mib(image.size.compressed)} compressed layers, archive ${mib(image.archive.length)}\n` +
      `image: wrote ${out} in ${((Date.now() - started) / 1000).toFixed(1)} s`,
  );
} catch (err) {
  console.error(`image: ${(err as Error).message}`);
  process.exitCode = 1;
}
