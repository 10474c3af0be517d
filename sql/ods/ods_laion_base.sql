-- ods_laion_base: one row per base row.
-- Input src_laion_base: every base part file, columns already cast to canonical types.
with source as (

    select * from src_laion_base

),

final as (

    select
        sample_id,
        url,
        text,
        -- LAION's base files swap WIDTH and HEIGHT; joined and aesthetic files do not.
        height as width,
        width as height,
        license,
        nsfw,
        similarity,
        language,
        laion_hash(url, text) as hash,
        file_name,
        subset
    from source

)

select * from final
