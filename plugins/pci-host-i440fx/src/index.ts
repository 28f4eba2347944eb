import { devicePlugin } from '@tsvmm/core';
import { i440fxHostType } from './i440fx.js';
import { piix3Type } from './piix3.js';

export * from './i440fx.js';
export * from './piix3.js';
export * from './pirq-router.js';
export default devicePlugin(i440fxHostType, piix3Type);
