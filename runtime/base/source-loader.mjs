// `node --import <this> --conditions=troupe-source`: runs troupe's TypeScript sources in a checkout (see
// source-hooks.mjs for why not tsx). Stack traces point into the .ts files.
import { register } from 'node:module';

process.setSourceMapsEnabled(true);
register('./source-hooks.mjs', import.meta.url);
