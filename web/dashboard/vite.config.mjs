// Vite builds the page into dist/, which web/dashboard/embed.go embeds.
// `npm run dev` serves the sources with hot reload and proxies /api/ to
// MESH_VIZ_API (default: the fake API of dev/fake-api.mjs on port 8086, or
// point it at a running `mesh viz dashboard`).
import { defineConfig } from 'vite';

export default defineConfig({
  // Relative asset URLs: the page works wherever it is served from.
  base: './',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    sourcemap: false,
    target: 'es2022',
    // One JS and one CSS file: the page is small and served from loopback.
    modulePreload: { polyfill: false },
    reportCompressedSize: true,
  },
  server: {
    host: '127.0.0.1',
    proxy: {
      '/api/': process.env.MESH_VIZ_API || 'http://127.0.0.1:8086',
    },
  },
});
