#!/usr/bin/env node
// The `troupe` command. TypeScript runs as is through tsx: there is no build step.
import { register } from 'tsx/esm/api';

register();
await import('./main.ts');
